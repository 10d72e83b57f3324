"""Hosting agents: the protocol's ``agents`` micro service, ``prompt`` and ``status`` endpoints, heartbeats.

Per ``@service.agent``, beside the service's own ``$SRV`` identity and with an instance id of
its own:

- ``$SRV.{PING,INFO,STATS}`` answered as service ``agents`` with metadata ``agent``, ``owner``,
  ``session``, ``protocol_version``;
- ``agents.prompt.{agent}.{owner}.{session}`` (queue group ``agents``, metadata
  ``max_payload`` and ``attachments_ok``): each prompt gets the leading
  ``{"type":"status","data":"ack"}`` before the function runs, ``response`` chunks for what it
  yields (``str``, or a ``Response`` with attachments), ``status``/``query`` chunks from its
  context, an ``ack`` keep-alive while it is silent, and the zero-byte headerless terminator;
  errors are ``Nats-Service-Error(-Code)`` headers followed by the terminator. The ack carries
  ``Shipkit-Stream`` (the cancel subject), which other callers ignore;
- ``agents.status.…`` (queue group ``agents``) answering a fresh heartbeat body;
- a heartbeat on ``agents.hb.…`` at start and every ``heartbeat_s``, stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit import _tracing
from shipkit._json import dumps
from shipkit.errors import ServiceError
from shipkit.logging import get_logger
from shipkit.service.agent import AgentContext, AgentSpec
from shipkit.service.agent_protocol import (
    PROTOCOL_VERSION,
    QUEUE_GROUP,
    SERVICE_NAME,
    Response,
    chunk,
    format_size,
    heartbeat_payload,
    parse_prompt,
    response_chunk,
)
from shipkit.service.codec import inspect_handler
from shipkit.service.consumers import Stopper
from shipkit.service.discovery import Discovery, ServiceIdentity, new_instance_id
from shipkit.service.endpoint import Endpoint, describe_failure, error_reply
from shipkit.service.host import Host
from shipkit.service.streaming import FLUSH_AT_BYTES, STREAM_HEADER, WRITE_AT_BYTES, StreamCancels

__all__ = ["AgentEndpoint", "start_agents"]

log = get_logger("shipkit.agent")

_ACK = chunk("status", "ack")


class _Outbox:
    """The reply side of one prompt: publishes chunks, remembers activity for the keep-alive."""

    __slots__ = ("active", "host", "reply")

    def __init__(self, host: Host, reply: str) -> None:
        self.host = host
        self.reply = reply
        self.active = asyncio.Event()

    async def send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        nc = self.host.client
        await nc.publish(self.reply, body, headers=headers)
        self.active.set()
        pending = nc.pending_data_size
        if pending > WRITE_AT_BYTES:  # backpressure and overlap, as for streamed handlers
            await (nc.flush() if pending > FLUSH_AT_BYTES else asyncio.sleep(0))

    async def keep_alive(self, interval_s: float) -> None:
        """Send an ``ack`` whenever ``interval_s`` passed without a chunk (cancelled at the end)."""
        while True:
            self.active.clear()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow our cancel
                async with asyncio.timeout(interval_s):
                    await self.active.wait()
            except TimeoutError:
                try:
                    await self.send(_ACK)
                except Exception as exc:  # the prompt's own next send (or the terminator) reports it
                    log.warning("agent.keepalive_failed", reply=self.reply, error=repr(exc))
                    return

    async def fail(self, code: int, message: str) -> None:
        """The error frame, then the terminator; never raises (the caller may be gone)."""
        body, headers = error_reply(code, message)
        try:
            await self.host.client.publish(self.reply, body, headers=headers)
            await self.host.client.publish(self.reply, b"")
        except Exception as exc:
            log.warning("agent.reply_failed", reply=self.reply, error=repr(exc))


class AgentEndpoint(Endpoint):
    """The ``prompt`` endpoint of one agent; each prompt runs in a task the host tracks."""

    __slots__ = ("_tracer", "cancels", "max_payload", "spec")

    def __init__(self, host: Host, spec: AgentSpec, cancels: StreamCancels, max_payload: int) -> None:
        super().__init__(
            host,
            "prompt",
            spec.subjects.subject("prompt"),
            spec.func,  # type: ignore[arg-type]  # an async generator function
            spec.signature,
            max_concurrency=spec.max_concurrency,
            queue_group=QUEUE_GROUP,
            metadata={"max_payload": format_size(max_payload), "attachments_ok": str(spec.attachments_ok).lower()},
        )
        self.spec = spec
        self.cancels = cancels
        self.max_payload = max_payload
        self._tracer = _tracing.tracer()  # decided once at start: prompts are traced or not

    async def handle(self, msg: Msg) -> None:
        """Take one prompt: wait for a free slot, then serve it in a tracked task (a span when tracing)."""
        self.num_requests += 1
        if self.in_flight >= self.max_concurrency:
            await self._wait_for_slot()
        started = time.perf_counter_ns()
        if self._tracer is None:
            self._spawn(self._serve(msg, started))
            return
        attributes = {"shipkit.agent": self.spec.subjects.agent, "shipkit.agent.owner": self.spec.subjects.owner}
        self._spawn(
            _tracing.run_in_span(self._tracer, msg.subject, msg.headers, attributes, lambda: self._serve(msg, started))
        )

    def _check(self, msg: Msg) -> Any:
        if len(msg.data) > self.max_payload:
            raise ServiceError(400, f"prompt payload exceeds max_payload {format_size(self.max_payload)}")
        prompt = parse_prompt(msg.data)
        if prompt.attachments and not self.spec.attachments_ok:
            raise ServiceError(400, "attachments are not supported by this endpoint")
        return prompt

    async def _serve(self, msg: Msg, started: int) -> None:
        if not msg.reply:
            log.warning("agent.prompt_without_reply", subject=msg.subject)
            return
        outbox = _Outbox(self.host, msg.reply)
        try:
            prompt = self._check(msg)
        except ServiceError as exc:
            self._record_failure(exc, started)
            await outbox.fail(exc.code, exc.message)
            return
        task = asyncio.current_task()
        assert task is not None  # always run by _spawn as a task
        token, cancel_subject = self.cancels.register(task)
        context = AgentContext(
            self.host, msg.subject, msg.headers, msg.reply, subjects=self.spec.subjects, send=outbox.send
        )
        try:
            await self._stream(outbox, prompt, context, cancel_subject)
        except asyncio.CancelledError:
            self.processing_time_ns += time.perf_counter_ns() - started
            self.host.counts.cancelled += 1
            if self.cancels.unregister(token):  # the caller asked: nobody listens any more
                task.uncancel()
                log.info("agent.prompt_cancelled", agent=self.spec.subjects.agent)
                return
            await outbox.fail(503, "agent is shutting down: the prompt was cancelled")
            raise
        except Exception as exc:
            self._record_failure(exc, started)
            code, message, _details = describe_failure(exc)
            await outbox.fail(code, message)
            return
        finally:
            self.cancels.unregister(token)
        try:
            await self.host.client.publish(msg.reply, b"")
        except Exception as exc:
            log.warning("agent.terminator_failed", agent=self.spec.subjects.agent, error=repr(exc))
        self.processing_time_ns += time.perf_counter_ns() - started
        self.host.counts.handled += 1

    async def _stream(self, outbox: _Outbox, prompt: Any, context: AgentContext, cancel_subject: str) -> None:
        """The ack, then a chunk per yielded value, keep-alives meanwhile; the generator closed however it ends."""
        await outbox.send(_ACK, {STREAM_HEADER: cancel_subject})  # before the function runs
        await asyncio.sleep(0)  # let the flusher send the ack before the function starts
        keep_alive = asyncio.create_task(outbox.keep_alive(self.spec.keepalive_s))
        generator: AsyncGenerator[Any, None] = self.func(*self.signature.call_args(prompt, context))  # type: ignore[assignment]
        try:
            async for value in generator:
                if not isinstance(value, str | Response):
                    name = type(value).__name__
                    raise TypeError(f"agent {self.spec.subjects.agent!r} yielded a {name}; yield str or Response")
                await outbox.send(response_chunk(value))
        finally:
            await _stop(keep_alive)  # before any error frame or terminator: no ack may follow those
            await generator.aclose()  # a failed send or a cancel leaves it suspended: run its finally

    def _record_failure(self, exc: BaseException, started: int) -> None:
        code, message, _details = describe_failure(exc)
        self.num_errors += 1
        self.last_error = f"{code}: {message}"
        self.processing_time_ns += time.perf_counter_ns() - started
        self.host.counts.failed += 1
        if code >= 500 and not isinstance(exc, ServiceError):
            log.error("agent.prompt_failed", agent=self.spec.subjects.agent, code=code, exc_info=exc)
        else:
            log.info("agent.prompt_rejected", agent=self.spec.subjects.agent, code=code, error=message)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _heartbeats(host: Host, subject: str, body: Any, interval_s: int, stop: asyncio.Event) -> None:
    """One heartbeat now, then every ``interval_s`` until ``stop`` (publish failures are logged)."""
    while not stop.is_set():
        try:
            await host.client.publish(subject, dumps(body()))
        except Exception as exc:  # a dropped connection: keep beating once it is back
            log.warning("agent.heartbeat_failed", subject=subject, error=repr(exc))
        try:
            async with asyncio.timeout(interval_s):
                await stop.wait()
        except TimeoutError:
            continue


async def _start_agent(host: Host, spec: AgentSpec, cancels: StreamCancels, version: str) -> Stopper:
    nc = host.client
    server_max = nc.max_payload or 1024 * 1024
    if spec.max_payload is not None and spec.max_payload > server_max:
        log.warning("agent.max_payload_clamped", agent=spec.subjects.agent, max_payload=spec.max_payload)
    max_payload = min(spec.max_payload or server_max, server_max)
    instance_id = new_instance_id()
    prompt = AgentEndpoint(host, spec, cancels, max_payload)
    subjects = spec.subjects

    def beat() -> dict[str, Any]:
        return heartbeat_payload(subjects, instance_id, spec.heartbeat_s, prompt.metadata)

    async def status() -> dict[str, Any]:
        return beat()

    status_endpoint = Endpoint(
        host,
        "status",
        subjects.subject("status"),
        status,
        inspect_handler(status),
        max_concurrency=16,
        queue_group=QUEUE_GROUP,
    )
    subscriptions: list[Subscription] = [
        await nc.subscribe(prompt.subject, queue=QUEUE_GROUP, cb=prompt.handle),
        await nc.subscribe(status_endpoint.subject, queue=QUEUE_GROUP, cb=status_endpoint.handle),
    ]
    metadata = {
        "agent": subjects.agent,
        "owner": subjects.owner,
        "session": subjects.session,
        "protocol_version": PROTOCOL_VERSION,
    }
    discovery = Discovery(
        ServiceIdentity(SERVICE_NAME, version, spec.description, metadata), [prompt, status_endpoint], instance_id
    )
    await discovery.start(nc)
    stop_beating = asyncio.Event()
    beats = asyncio.create_task(
        _heartbeats(host, subjects.subject("hb"), beat, spec.heartbeat_s, stop_beating), name=f"hb:{subjects.agent}"
    )
    log.info("agent.started", agent=subjects.agent, owner=subjects.owner, instance_id=instance_id)

    async def stop(_grace_s: float) -> None:
        """Stop being found and prompted; prompts in flight are the runtime's tracked tasks."""
        await discovery.stop()
        for subscription in subscriptions:
            try:  # drain: a prompt already buffered is still served (and tracked), not dropped
                await subscription.drain()  # type: ignore[no-untyped-call]
            except Exception as exc:  # closed with its connection already: nothing left to stop
                log.debug("agent.unsubscribe_failed", subject=subscription.subject, error=repr(exc))
        stop_beating.set()
        await beats

    return stop


async def start_agents(host: Host, specs: Sequence[AgentSpec], cancels: StreamCancels, version: str) -> list[Stopper]:
    """Start every ``@service.agent``; returns one stopper per agent."""
    stoppers: list[Stopper] = []
    try:
        for spec in specs:
            stoppers.append(await _start_agent(host, spec, cancels, version))
    except BaseException:
        await asyncio.gather(*(stop(0) for stop in stoppers), return_exceptions=True)
        raise
    return stoppers
