"""Calling agents that speak the Synadia Agent Protocol for NATS: :class:`Agents`.

::

    async with Agents("nats://localhost:4222") as agents:
        for info in await agents.discover():
            print(info.agent, info.owner, len(info.live_instances()))
        async for chunk in agents.prompt("assistant", "Weather?", on_query=lambda q: "Paris"):
            if isinstance(chunk, Response):
                print(chunk.text, end="")

The heartbeat subscription (``agents.hb.>``) starts before the first discovery PING, as the
protocol asks, and tracks every instance's last heartbeat: an instance is offline after three
missed intervals. Error messages are checked before the body; unknown chunk types are ignored;
the ``ack`` status only resets the inactivity timer. Leaving the loop early cancels the prompt
at a shipkit host (its generator is closed); other hosts never see the difference.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit._connectable import Connectable
from shipkit._json import loads
from shipkit.agents.chunks import Chunk, Query, decode_chunk
from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import NatsTimeoutError, PayloadTooLargeError, SerializationError, ServiceError
from shipkit.service.agent_protocol import SERVICE_NAME, Attachment, encode_prompt, parse_size
from shipkit.service.endpoint import ERROR_CODE_HEADER, ERROR_HEADER
from shipkit.service.stream_reader import StreamReader

__all__ = ["AgentInfo", "Agents", "Instance", "QueryHandler"]

QueryHandler = Callable[[Query], "str | Awaitable[str]"]
"""``on_query``: gets the :class:`Query`, returns the answer (sync or async)."""

_OFFLINE_AFTER_INTERVALS = 3


@dataclass(slots=True)
class Instance:
    """One running instance of an agent, as discovery and its heartbeats describe it."""

    instance_id: str
    prompt_subject: str
    max_payload: int | None
    attachments_ok: bool
    version: str = ""
    last_heartbeat: str | None = None
    """The ``ts`` of its last heartbeat (UTC ISO 8601), None before the first."""
    interval_s: int | None = None
    heard_at: float | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        """Heard within three heartbeat intervals (an instance not heard yet counts as alive)."""
        if self.heard_at is None or self.interval_s is None:
            return True
        return time.monotonic() - self.heard_at <= _OFFLINE_AFTER_INTERVALS * self.interval_s


@dataclass(slots=True)
class AgentInfo:
    """A logical agent (``agent``, ``owner``, ``session``) and its discovered instances."""

    agent: str
    owner: str
    session: str
    protocol_version: str
    description: str = ""
    instances: list[Instance] = field(default_factory=list)

    def live_instances(self) -> list[Instance]:
        """The instances whose heartbeats are current."""
        return [i for i in self.instances if i.alive]


@dataclass(slots=True)
class _Beat:
    ts: str | None
    interval_s: int | None
    heard_at: float


def _info_from(raw: Any) -> tuple[tuple[str, str, str], str, Instance] | None:
    """(key, protocol_version, instance) from one ``$SRV.INFO`` reply; None if not an agent."""
    if not isinstance(raw, dict) or raw.get("name") != SERVICE_NAME:
        return None
    metadata = raw.get("metadata") or {}
    endpoints = raw.get("endpoints") or []
    prompt = next((e for e in endpoints if isinstance(e, dict) and e.get("name") == "prompt"), None)
    if not all(isinstance(metadata.get(k), str) for k in ("agent", "owner", "protocol_version")) or prompt is None:
        return None
    subject = str(prompt.get("subject", ""))
    parts = subject.split(".")
    session = metadata.get("session") or (parts[4] if len(parts) == 5 else "")
    ep_meta = prompt.get("metadata") or {}
    try:
        max_payload: int | None = parse_size(str(ep_meta["max_payload"])) if "max_payload" in ep_meta else None
    except ValueError:
        max_payload = None  # an unparseable limit is the host's to enforce
    instance = Instance(
        str(raw.get("id", "")), subject, max_payload, ep_meta.get("attachments_ok") == "true", str(raw.get("version"))
    )
    return (metadata["agent"], metadata["owner"], session), metadata["protocol_version"], instance


class Agents(Connectable):
    """Discover and prompt agents.

    Args:
        connection: a shared manager, a config, a URL, or None (environment default).
        inactivity_timeout_s: default longest silence in a prompt's stream (the protocol's
            callers use 60 s; hosts send keep-alives well within it).
    """

    def __init__(
        self, connection: ConnectionManager | NatsConfig | str | None = None, *, inactivity_timeout_s: float = 60.0
    ) -> None:
        self.connection, self._owned = resolve_connection(connection)
        self.inactivity_timeout_s = inactivity_timeout_s
        self._beats: dict[str, _Beat] = {}
        self._heartbeats: Subscription | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def on_heartbeat(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(payload)`` for every heartbeat received (after liveness is updated)."""
        self._listeners.append(listener)

    async def connect(self) -> Agents:
        """Connect, and subscribe to heartbeats before anything is discovered."""
        await self.connection.connect()
        if self._heartbeats is None:
            self._heartbeats = await self.connection.client.subscribe("agents.hb.>", cb=self._on_heartbeat)
        return self

    async def close(self) -> None:
        """Stop tracking heartbeats; close the connection if this object made it."""
        subscription, self._heartbeats = self._heartbeats, None
        if subscription is not None and not self.connection.client.is_closed:
            await subscription.unsubscribe()
        if self._owned:
            await self.connection.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = loads(msg.data, msg.subject)
        except SerializationError:
            return  # not a heartbeat this caller can read; liveness comes from valid ones
        if isinstance(beat, dict) and isinstance(beat.get("instance_id"), str):
            interval = beat.get("interval_s")
            self._beats[beat["instance_id"]] = _Beat(
                beat.get("ts"), interval if isinstance(interval, int) else None, time.monotonic()
            )
            for listener in self._listeners:
                listener(beat)

    async def status(self, info: AgentInfo, *, timeout_s: float = 2.0) -> dict[str, Any]:
        """Ask one instance of ``info`` for its status (a fresh heartbeat body), recorded as a heartbeat.

        Raises:
            NatsTimeoutError: no instance answered in time.
        """
        await self.connect()
        subject = f"agents.status.{info.agent}.{info.owner}.{info.session}"
        msg = await self.connection.request(subject, b"", timeout_s=timeout_s)
        beat = loads(msg.data, f"status of agent {info.agent!r}")
        await self._on_heartbeat(msg)
        for instance in info.instances:
            recorded = self._beats.get(instance.instance_id)
            if recorded is not None:
                instance.last_heartbeat, instance.interval_s, instance.heard_at = (
                    recorded.ts,
                    recorded.interval_s,
                    recorded.heard_at,
                )
        return beat if isinstance(beat, dict) else {}

    async def discover(self, *, stall_s: float = 0.2, max_wait_s: float = 2.0) -> list[AgentInfo]:
        """Every agent answering ``$SRV.INFO.agents``, instances grouped, liveness from heartbeats.

        Returns when no new reply came for ``stall_s``, or after ``max_wait_s``. An instance not
        heard yet has no ``last_heartbeat``; :meth:`status` asks one for a fresh one.
        """
        await self.connect()
        nc = self.connection.client
        replies: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            replies.put_nowait(msg)

        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox, cb=collect)
        found: dict[tuple[str, str, str], AgentInfo] = {}
        deadline = time.monotonic() + max_wait_s
        try:
            await nc.publish(f"$SRV.INFO.{SERVICE_NAME}", b"", reply=inbox)
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(min(stall_s, remaining)):
                        msg = await replies.get()
                except TimeoutError:
                    break
                self._add(found, msg)
        finally:
            await subscription.unsubscribe()
        return sorted(found.values(), key=lambda a: (a.agent, a.owner, a.session))

    def _add(self, found: dict[tuple[str, str, str], AgentInfo], msg: Msg) -> None:
        try:
            raw = loads(msg.data, "$SRV.INFO reply")
        except SerializationError:
            return  # another service's malformed reply is not an agent
        parsed = _info_from(raw)
        if parsed is None:
            return
        key, version, instance = parsed
        beat = self._beats.get(instance.instance_id)
        if beat is not None:
            instance.last_heartbeat, instance.interval_s, instance.heard_at = beat.ts, beat.interval_s, beat.heard_at
        info = found.setdefault(key, AgentInfo(*key, version, str(raw.get("description", ""))))
        info.instances.append(instance)

    async def find(self, agent: str, *, owner: str | None = None, session: str | None = None) -> AgentInfo:
        """The discovered agent named ``agent`` (narrowed by owner/session).

        Raises:
            ServiceError: 404 when none matches, 409 when several do (pass ``owner``/``session``).
        """
        matches = [
            info
            for info in await self.discover()
            if info.agent == agent and owner in (None, info.owner) and session in (None, info.session)
        ]
        if not matches:
            raise ServiceError(404, f"no agent {agent!r} found (owner={owner!r}, session={session!r})")
        if len(matches) > 1:
            owners = ", ".join(f"{m.owner}/{m.session}" for m in matches)
            raise ServiceError(409, f"several agents named {agent!r} ({owners}); pass owner= or session=")
        return matches[0]

    async def prompt(
        self,
        agent: str | AgentInfo,
        text: str,
        *,
        owner: str | None = None,
        session: str | None = None,
        attachments: Sequence[Attachment] = (),
        on_query: QueryHandler | None = None,
        inactivity_timeout_s: float | None = None,
    ) -> AsyncIterator[Chunk]:
        """Prompt an agent and iterate over its stream: :class:`Response`, :class:`Status`, :class:`Query`.

        Args:
            agent: a name (discovered now) or an :class:`AgentInfo` from :meth:`discover`.
            text: the prompt.
            owner / session: narrow a name to one agent.
            attachments: files sent base64-encoded in the envelope.
            on_query: answers the agent's mid-stream questions (the :class:`Query` is still
                yielded, with ``answered`` set); without it, call ``await query.reply(...)``.
            inactivity_timeout_s: longest silence tolerated (default: the client's).

        Raises:
            ServiceError: the agent answered with an error (code and message from its headers),
                or no such agent (404).
            PayloadTooLargeError: the prompt exceeds the agent's ``max_payload``.
            NatsTimeoutError: the stream went silent for longer than the inactivity timeout.
        """
        info = agent if isinstance(agent, AgentInfo) else await self.find(agent, owner=owner, session=session)
        instance = (info.live_instances() or info.instances)[0]
        body = encode_prompt(text, tuple(attachments))
        if attachments and not instance.attachments_ok:
            raise ServiceError(400, f"agent {info.agent!r} does not accept attachments")
        if instance.max_payload is not None and len(body) > instance.max_payload:
            raise PayloadTooLargeError(f"prompt of {len(body)} bytes exceeds {info.agent!r}'s max_payload")
        await self.connect()
        nc = self.connection.client
        where = f"agent {info.agent!r}"
        reader = StreamReader(
            nc,
            instance.prompt_subject,
            body,
            inactivity_timeout_s=inactivity_timeout_s or self.inactivity_timeout_s,
            single_reply_ok=False,
        )
        await reader.start()
        try:
            while (msg := await reader.next()) is not None:
                headers = msg.headers or {}
                if ERROR_CODE_HEADER in headers:
                    code = headers[ERROR_CODE_HEADER]
                    raise ServiceError(int(code) if code.isdigit() else 500, headers.get(ERROR_HEADER, "error"))
                item = decode_chunk(msg.data, where, nc)
                if item is None:
                    continue
                if isinstance(item, Query) and on_query is not None:
                    answer = on_query(item)
                    await item.reply(await answer if inspect.isawaitable(answer) else answer)
                yield item
        except NatsTimeoutError as exc:
            raise NatsTimeoutError(f"{where}: {exc}") from exc
        finally:
            await reader.aclose()
