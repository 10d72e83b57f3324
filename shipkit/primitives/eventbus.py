"""Durable events on JetStream: :class:`EventBus`, and the :class:`DurableConsumer` loop behind it.

Wire contract §1 to §3. :meth:`EventBus.emit` publishes a :class:`~shipkit.models.ShipEvent` to
``{prefix}.{event_type}`` (default ``ship.events.{event_type}``, stream ``SHIP_EVENTS``) and waits
for the JetStream ack; :meth:`EventBus.emit_many` pipelines many publishes (send all, then await
all acks). :meth:`EventBus.subscribe` attaches a durable pull consumer filtered on
``{prefix}.{pattern}``: a new durable replays everything retained (or only new events with
``deliver="new"``), an existing one resumes from its ack floor::

    async with EventBus("nats://localhost:4222", source="builder") as bus:
        await bus.emit("item.created", {"id": 7})

        async def audit(event: ShipEvent) -> None:
            print(event.event_type, event.payload)

        sub = await bus.subscribe("item.*", "auditor", audit)
        ...
        await sub.stop()          # stops consuming; the durable stays on the server

The module-level :func:`emit_event` publishes through a process-wide bus (:func:`get_global_bus`,
created lazily from the environment's NATS URL, or installed with :func:`set_global_bus`).

DurableConsumer
---------------
The consume loop is reusable on its own (the service runtime builds ``@service.on_event`` on it)::

    consumer = DurableConsumer(
        manager,                       # a connected ConnectionManager
        stream="SHIP_EVENTS",
        filter_subject="ship.events.item.*",
        durable="auditor",
        handler=on_msg,                # async (nats Msg) -> None
        max_in_flight=16,              # handlers running at once (1 = strictly in order)
        nak_delay_s=1.0,
    )
    await consumer.start()             # creates or attaches the durable, starts pulling
    ...
    await consumer.stop(timeout_s=10)  # graceful: see below

Semantics, per message:

- the handler returns -> the message is acked (unless the handler settled it itself);
- the handler raises :class:`~shipkit.errors.SerializationError` -> the message can never be
  processed: it is acked and logged as ``message.undecodable`` (never redelivered);
- the handler raises anything else -> logged as ``handler.failed`` and nak'ed with
  ``nak_delay_s``, so JetStream redelivers it after the delay (bounded by ``max_deliver``).

Consumers are JetStream *pull* consumers with explicit ack. One pull request asks for up to
``batch`` messages and stays open for ``expires_s`` with idle heartbeats, so a new message is
handled as soon as it arrives (not at the end of a fetch window); a new request is sent when
fewer than half a window is outstanding. The window starts at ``max_in_flight`` and grows (up to
``batch``) while the measured handler time lets a full window finish within half of
``ack_wait_s``, so slow handlers never sit on prefetched messages until JetStream redelivers them.

:meth:`DurableConsumer.stop` stops intake at once (no waiting out a pull request), naks the
messages fetched but not started (so they are redelivered immediately, to this durable's next
reader), lets running handlers finish within ``timeout_s``, then cancels the rest loudly and
naks their messages. The durable itself is never deleted.

This module runs past ~400 lines because the bus and the loop it relies on share one set of
ack/nak rules; the loop is kept here so there is exactly one implementation of them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import structlog
from nats.js import api
from pydantic import ValidationError

from shipkit._json import dumps
from shipkit._names import validate_consumer_name, validate_stream_name, validate_subject
from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import (
    JS_ERR_CONSUMER_NOT_FOUND,
    ConfigurationError,
    JetStreamError,
    NatsTimeoutError,
    ProvisioningError,
    SerializationError,
    translate_nats_errors,
)
from shipkit.models import ShipEvent

__all__ = [
    "DeliverPolicyName",
    "DurableConsumer",
    "EventBus",
    "MsgHandler",
    "ShipEventHandler",
    "close_global_bus",
    "emit_event",
    "get_global_bus",
    "set_global_bus",
    "ship_event_handler",
]

log = structlog.get_logger(__name__)

DeliverPolicyName = Literal["all", "new"]
"""Where a *new* durable starts: every retained message, or only those published from now on."""

MsgHandler = Callable[[Any], Awaitable[None]]
"""An async handler of one raw nats-py ``Msg`` (what :class:`DurableConsumer` calls)."""

ShipEventHandler = Callable[[ShipEvent], Awaitable[None]]
"""An async handler of one decoded :class:`~shipkit.models.ShipEvent`."""

_JS_API_PREFIX = "$JS.API"
_MSG_ID_HEADER = "Nats-Msg-Id"
_NS = 1_000_000_000


def ship_event_handler(handler: ShipEventHandler) -> MsgHandler:
    """Adapt a ``(ShipEvent) -> Awaitable`` handler to the raw-message handler of a consumer.

    A body that is not a ``ShipEvent`` raises :class:`SerializationError`, which the consumer
    acks and logs.
    """

    async def on_msg(msg: Any) -> None:
        await handler(ShipEvent.from_json(msg.data))

    return on_msg


def _check_async(handler: Callable[..., Any], what: str) -> None:
    if (inspect.isfunction(handler) or inspect.ismethod(handler)) and not inspect.iscoroutinefunction(handler):
        raise ConfigurationError(f"{what} {handler.__qualname__} must be an async function")


class DurableConsumer:
    """A durable JetStream pull consumer feeding an async handler (see the module docstring).

    Args:
        connection: a connected :class:`ConnectionManager` (not closed by the consumer).
        stream: the stream name.
        filter_subject: the subject filter, wildcards allowed (``ship.events.item.*``).
        durable: the durable consumer name (created if missing, else attached as it is).
        handler: ``async (msg) -> None`` receiving the raw nats-py ``Msg``.
        deliver: where a new durable starts (``"all"`` retained messages, or ``"new"``).
        max_in_flight: handlers running at once; 1 keeps strict stream order.
        batch: the most messages asked for in one pull request (the prefetch ceiling).
        nak_delay_s: redelivery delay after a handler failure.
        ack_wait_s: ``ack_wait`` of a new durable: redelivery after this long without an ack.
        max_deliver: ``max_deliver`` of a new durable (``None`` = unlimited).
        expires_s: how long one pull request stays open on the server.
        heartbeat_s: idle-heartbeat interval of pull requests; two missed ones re-arm the pull
            (after a reconnect or a server restart).
    """

    def __init__(
        self,
        connection: ConnectionManager,
        *,
        stream: str,
        filter_subject: str,
        durable: str,
        handler: MsgHandler,
        deliver: DeliverPolicyName = "all",
        max_in_flight: int = 1,
        batch: int = 100,
        nak_delay_s: float = 1.0,
        ack_wait_s: float = 30.0,
        max_deliver: int | None = None,
        expires_s: float = 30.0,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.stream = validate_stream_name(stream)
        self.filter_subject = validate_subject(filter_subject, "filter subject", wildcards=True)
        self.durable = validate_consumer_name(durable, "durable name")
        _check_async(handler, "consumer handler")
        if deliver not in ("all", "new"):
            raise ConfigurationError(f"deliver must be 'all' or 'new', got {deliver!r}")
        if max_in_flight < 1 or batch < 1:
            raise ConfigurationError(f"max_in_flight and batch must be >= 1 (got {max_in_flight}, {batch})")
        if nak_delay_s < 0 or ack_wait_s <= 0 or heartbeat_s <= 0 or expires_s < 2 * heartbeat_s:
            raise ConfigurationError(
                "need nak_delay_s >= 0, ack_wait_s > 0, heartbeat_s > 0 and expires_s >= 2 * heartbeat_s"
            )
        self._conn = connection
        self._handler = handler
        self._deliver: DeliverPolicyName = deliver
        self._max_in_flight = max_in_flight
        self._batch = batch
        self._nak_delay_s = nak_delay_s
        self._ack_wait_s = ack_wait_s
        self._max_deliver = max_deliver
        self._expires_ns = int(expires_s * _NS)
        self._heartbeat_s = heartbeat_s
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._inbox = ""
        self._pull_subject = f"{_JS_API_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        self._requested = 0  # messages asked for in open pull requests, not yet delivered
        self._busy = 0  # handlers running now
        self._avg_handler_s: float | None = None
        self._last_activity = 0.0
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._state == "running"

    async def start(self) -> Self:
        """Create or attach the durable and start consuming; returns ``self``.

        Raises:
            StreamNotFoundError: the stream does not exist.
            ProvisioningError: the durable is missing and the connection is in verify mode.
            ConfigurationError: the existing durable is a push consumer, or already started.
            NotConnectedError: the connection is not connected.
        """
        if self._state != "new":
            raise ConfigurationError(f"consumer {self.durable!r} was already started (or stopped): make a new one")
        client = self._conn.client
        await self._ensure_consumer()
        self._inbox = client.new_inbox()
        with translate_nats_errors(f"subscribe to pull inbox of {self.stream}/{self.durable}"):
            self._sub = await client.subscribe(self._inbox, cb=self._on_message)
        self._state = "running"
        self._last_activity = time.monotonic()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._max_in_flight)]
        self._watchdog = asyncio.create_task(self._watch())
        await self._maybe_pull()
        log.debug("consumer.started", stream=self.stream, durable=self.durable, filter=self.filter_subject)
        return self

    async def info(self) -> Any:
        """The server's current ``ConsumerInfo`` for this durable (pending, ack floor ...)."""
        with translate_nats_errors(f"consumer info {self.stream}/{self.durable}"):
            return await self._conn.jetstream.consumer_info(self.stream, self.durable)

    async def _ensure_consumer(self) -> Any:
        js = self._conn.jetstream
        where = f"consumer {self.durable!r} on stream {self.stream!r} (filter {self.filter_subject!r})"
        try:
            with translate_nats_errors(where):
                info = await js.consumer_info(self.stream, self.durable)
        except JetStreamError as exc:
            if exc.err_code != JS_ERR_CONSUMER_NOT_FOUND:
                raise
            info = None
        if info is not None:
            self._check_existing(info.config)
            return info
        if self._conn.provision == "verify":
            raise ProvisioningError(f"{where} does not exist and provision mode is 'verify'")
        config = api.ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL if self._deliver == "all" else api.DeliverPolicy.NEW,
            ack_wait=self._ack_wait_s,
            max_deliver=self._max_deliver,
        )
        with translate_nats_errors(f"create {where}"):
            info = await js.add_consumer(self.stream, config=config)
        log.info("consumer.provisioned", stream=self.stream, durable=self.durable, filter=self.filter_subject)
        return info

    def _check_existing(self, config: Any) -> None:
        if config.deliver_subject:
            raise ConfigurationError(
                f"durable {self.durable!r} on stream {self.stream!r} is a push consumer; shipkit consumes with pull "
                "consumers: delete it or pick another durable name"
            )
        filters = sorted(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))
        if filters != [self.filter_subject]:
            log.warning(
                "consumer.drift",
                stream=self.stream,
                durable=self.durable,
                declared_filter=self.filter_subject,
                actual_filter=filters,
                hint="the existing durable is used as it is; delete it to apply the declared filter",
            )

    # -- intake --------------------------------------------------------------------------------

    async def _on_message(self, msg: Any) -> None:
        self._last_activity = time.monotonic()
        if not msg.reply:  # JetStream data messages always carry an ack subject; this is a status
            await self._on_status(msg.headers or {})
            return
        self._requested = max(0, self._requested - 1)
        if self._state != "running":
            await self._settle(msg, "nak")
            return
        self._queue.put_nowait(msg)

    async def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat: the pull request is alive
            return
        unfilled = headers.get("Nats-Pending-Messages")
        # the request is over: forget what it will no longer deliver
        self._requested = max(0, self._requested - int(unfilled)) if unfilled is not None else 0
        if status in ("404", "408"):  # no messages / request expired: the normal end of a pull
            await self._maybe_pull()
            return
        # 409 (refused or cut short by the server), 503 (consumer gone): the watchdog retries,
        # which keeps a persistent problem from turning into a tight loop
        log.warning("consumer.pull_failed", durable=self.durable, status=status, reason=_description(headers))

    def _window(self) -> int:
        """How many messages may be requested or waiting: grows while handlers are quick."""
        if self._avg_handler_s is None:
            return min(self._batch, self._max_in_flight)
        affordable = int(self._ack_wait_s / 2 / max(self._avg_handler_s, 1e-6) * self._max_in_flight)
        return max(min(self._max_in_flight, self._batch), min(self._batch, affordable))

    async def _maybe_pull(self) -> None:
        if self._state != "running":
            return
        window = self._window()
        outstanding = self._requested + self._queue.qsize() + self._busy
        if outstanding > window // 2:
            return
        want = window - outstanding
        self._requested += want
        request = dumps({"batch": want, "expires": self._expires_ns, "idle_heartbeat": int(self._heartbeat_s * _NS)})
        try:
            await self._conn.client.publish(self._pull_subject, request, reply=self._inbox)
        except Exception as exc:  # closed or reconnecting: the watchdog re-arms the pull
            self._requested -= want
            log.debug("consumer.pull_deferred", durable=self.durable, error=f"{type(exc).__name__}: {exc}")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if self._requested and time.monotonic() - self._last_activity > 2 * self._heartbeat_s:
                log.debug("consumer.pull_stale", durable=self.durable, requested=self._requested)
                self._requested = 0  # the request was lost (reconnect, server restart): ask again
                self._last_activity = time.monotonic()
            await self._maybe_pull()

    # -- handling ------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            msg = await self._queue.get()
            if msg is None:
                return
            self._busy += 1
            started = time.monotonic()
            try:
                await self._process(msg)
            finally:
                self._busy -= 1
            elapsed = time.monotonic() - started
            avg = self._avg_handler_s
            self._avg_handler_s = elapsed if avg is None else 0.8 * avg + 0.2 * elapsed
            await self._maybe_pull()

    async def _process(self, msg: Any) -> None:
        try:
            await self._handler(msg)
        except asyncio.CancelledError:
            await self._settle(msg, "nak")  # cancelled by stop(): give it back at once
            raise
        except SerializationError as exc:
            log.warning(
                "message.undecodable", subject=msg.subject, durable=self.durable, reason=str(exc)[:300], acked=True
            )
            await self._settle(msg, "ack")
        except Exception:
            log.exception("handler.failed", subject=msg.subject, durable=self.durable, nak_delay_s=self._nak_delay_s)
            await self._settle(msg, "nak", self._nak_delay_s)
        else:
            await self._settle(msg, "ack")

    async def _settle(self, msg: Any, how: Literal["ack", "nak"], delay_s: float = 0.0) -> None:
        if msg.is_acked:  # the handler acked, nak'ed or terminated it itself
            return
        try:
            await (msg.ack() if how == "ack" else msg.nak(delay=delay_s or None))
        except Exception as exc:  # the connection is gone: JetStream redelivers after ack_wait
            log.warning(f"message.{how}_failed", subject=msg.subject, durable=self.durable, error=f"{exc!r}")

    # -- shutdown ------------------------------------------------------------------------------

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop consuming; the durable stays on the server (idempotent).

        Intake stops at once; fetched messages not yet started are nak'ed; running handlers get
        ``timeout_s`` to finish, then are cancelled and their messages nak'ed.
        """
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopping"
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self._close_intake()
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            await self._settle(msg, "nak")
        for _ in self._workers:
            self._queue.put_nowait(None)
        _, running = await asyncio.wait(self._workers, timeout=timeout_s) if self._workers else (set(), set())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if running:
            log.warning("consumer.handlers_cancelled", durable=self.durable, count=len(running), timeout_s=timeout_s)
        if self._conn.is_connected:
            try:
                await self._conn.client.flush()  # push the last acks/naks out of the write buffer now
            except Exception as exc:
                log.debug("consumer.flush_failed", durable=self.durable, error=f"{exc!r}")
        self._state = "stopped"
        log.debug("consumer.stopped", stream=self.stream, durable=self.durable)

    async def _close_intake(self) -> None:
        """Remove interest in the pull inbox; messages already on the way are nak'ed by the callback."""
        sub, self._sub = self._sub, None
        if sub is None or not self._conn.is_connected:
            return
        try:
            await sub.drain()
        except Exception as exc:
            log.debug("consumer.drain_failed", durable=self.durable, error=f"{exc!r}")
            try:
                await sub.unsubscribe()
            except Exception as inner:  # already gone with the connection
                log.debug("consumer.unsubscribe_failed", durable=self.durable, error=f"{inner!r}")


def _description(headers: dict[Any, str]) -> str:
    return next((v for k, v in headers.items() if str(getattr(k, "value", k)) == "Description"), "").strip()


class EventBus:
    """Durable :class:`~shipkit.models.ShipEvent` publishing and consuming over JetStream.

    Args:
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
        stream: the stream to provision; defaults to ``SHIP_EVENTS`` capturing ``{prefix}.>``.
        prefix: events go to ``{prefix}.{event_type}``.
        source: written into every emitted event's ``source``.
    """

    def __init__(
        self,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        stream: StreamConfig | None = None,
        prefix: str = "ship.events",
        source: str = "",
    ) -> None:
        self.prefix = validate_subject(prefix, "event prefix")
        self.stream = stream or StreamConfig.event_bus(prefix=prefix)
        self.source = source
        self._conn, self._owns_connection = resolve_connection(connection)
        self._consumers: list[DurableConsumer] = []
        self._connect_lock = asyncio.Lock()
        self._ready = False

    def _copy(self, **changes: Any) -> EventBus:
        options: dict[str, Any] = {"stream": self.stream, "prefix": self.prefix, "source": self.source, **changes}
        bus = EventBus(self._conn, **options)
        bus._owns_connection = self._owns_connection
        return bus

    def with_stream(self, stream: StreamConfig, prefix: str = "ship.events") -> EventBus:
        """A bus on a custom stream and prefix (seed: ``EventBus::with_stream``); use it instead of this one."""
        return self._copy(stream=stream, prefix=prefix)

    def with_source(self, source: str) -> EventBus:
        """A bus that stamps ``source`` on its events (seed: ``.with_source``); use it instead of this one."""
        return self._copy(source=source)

    @property
    def connection(self) -> ConnectionManager:
        """The connection manager in use (shared or owned)."""
        return self._conn

    @property
    def is_connected(self) -> bool:
        """True after :meth:`connect` while the connection is open."""
        return self._ready and self._conn.is_connected

    async def connect(self) -> Self:
        """Connect if needed and make sure the stream exists; returns ``self``.

        Raises:
            NatsConnectionError: the server cannot be reached.
            ProvisioningError: the stream is missing and the connection is in verify mode.
        """
        async with self._connect_lock:
            await self._conn.connect()
            await self._conn.ensure_stream(self.stream)
            self._ready = True
        return self

    async def close(self) -> None:
        """Stop the consumers this bus started (newest first), then close an owned connection."""
        consumers, self._consumers = self._consumers, []
        for consumer in reversed(consumers):
            await consumer.stop()
        self._ready = False
        if self._owns_connection:
            await self._conn.disconnect()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- publishing ----------------------------------------------------------------------------

    def new_event(self, event_type: str, payload: Any = None, *, correlation_id: str | None = None) -> ShipEvent:
        """A ``ShipEvent`` stamped now with this bus's source (not sent)."""
        event_type = str(validate_subject(event_type, "event type"))
        try:
            return ShipEvent.new(event_type, payload, source=self.source, correlation_id=correlation_id)
        except ValidationError as exc:
            raise SerializationError(f"cannot build a ShipEvent of type {event_type!r}: {exc}") from exc

    async def emit(
        self,
        event_type: str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
        msg_id: str | None = None,
    ) -> ShipEvent:
        """Publish an event to ``{prefix}.{event_type}`` and wait for the JetStream ack.

        Args:
            event_type: dotted type (``item.created``), no wildcards or whitespace.
            payload: any JSON-able value.
            correlation_id: defaults to a fresh 8-hex id.
            msg_id: de-duplication id (``Nats-Msg-Id``): a repeat within the stream's
                duplicate window is stored once.

        Returns:
            The event as sent.

        Raises:
            InvalidNameError: invalid event type (nothing is sent).
            SerializationError: the payload is not JSON-able.
            StreamNotFoundError: no stream captures the subject (the message names it).
            NatsTimeoutError: no ack in time.
        """
        event = self.new_event(event_type, payload, correlation_id=correlation_id)
        await self.emit_event(event, msg_id=msg_id)
        return event

    async def emit_event(self, event: ShipEvent, *, msg_id: str | None = None) -> None:
        """Publish a prepared ``ShipEvent`` to ``{prefix}.{event.event_type}``, ack awaited.

        Raises the same errors as :meth:`emit`.
        """
        subject, data, headers = self._prepare(event, msg_id)
        js = self._conn.jetstream
        with translate_nats_errors(f"event bus publish to {subject!r}"):
            await js.publish(subject, data, headers=headers)

    async def emit_many(
        self,
        events: Iterable[ShipEvent | tuple[str, Any]],
        *,
        msg_ids: Sequence[str | None] | None = None,
        timeout_s: float | None = None,
    ) -> list[ShipEvent]:
        """Publish many events pipelined: send all, then wait for all acks.

        Every name is validated and every event encoded before the first is sent.

        Args:
            events: ``ShipEvent`` objects or ``(event_type, payload)`` pairs (stamped with this
                bus's source).
            msg_ids: optional de-duplication ids, one per event (``None`` entries allowed).
            timeout_s: how long to wait for all acks (default: the connection's request timeout).

        Returns:
            The events as sent, in order.

        Raises:
            StreamNotFoundError / JetStreamError: some events were not stored; the message says
                how many. Events acked before the failure stay stored.
            NatsTimeoutError: acks missing after ``timeout_s``.
        """
        batch = [e if isinstance(e, ShipEvent) else self.new_event(e[0], e[1]) for e in events]
        ids = list(msg_ids) if msg_ids is not None else [None] * len(batch)
        if len(ids) != len(batch):
            raise ConfigurationError(f"msg_ids has {len(ids)} entries for {len(batch)} events")
        prepared = [self._prepare(event, msg_id) for event, msg_id in zip(batch, ids, strict=True)]
        js = self._conn.jetstream
        timeout = timeout_s if timeout_s is not None else self._conn.config.request_timeout_s
        futures: list[asyncio.Future[Any]] = []
        try:
            with translate_nats_errors(f"event bus pipelined publish of {len(batch)} events"):
                for subject, data, headers in prepared:
                    futures.append(await js.publish_async(subject, data, headers=headers))
                _, pending = await asyncio.wait(futures, timeout=timeout) if futures else (set(), set())
        finally:
            for future in futures:  # never leave an ack future behind (it holds a pending slot)
                if not future.done():
                    future.cancel()
        if pending:
            raise NatsTimeoutError(f"event bus pipelined publish: {len(pending)} of {len(batch)} acks missing")
        failures = [exc for f in futures if (exc := f.exception()) is not None]
        if failures:
            with translate_nats_errors(f"event bus pipelined publish: {len(failures)} of {len(batch)} not stored"):
                raise failures[0]
        return batch

    def _prepare(self, event: ShipEvent, msg_id: str | None) -> tuple[str, bytes, dict[str, str] | None]:
        validate_subject(event.event_type, "event type")
        subject = f"{self.prefix}.{event.event_type}"
        return subject, event.to_json(), ({_MSG_ID_HEADER: msg_id} if msg_id else None)

    # -- consuming -----------------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        durable: str,
        handler: ShipEventHandler,
        *,
        deliver: DeliverPolicyName = "all",
        max_in_flight: int = 1,
        nak_delay_s: float = 1.0,
        batch: int = 100,
        ack_wait_s: float = 30.0,
    ) -> DurableConsumer:
        """Consume events matching ``{prefix}.{pattern}`` with the durable ``durable``.

        A new durable starts with every retained event (``deliver="all"``) or only new ones
        (``"new"``); an existing durable resumes from its ack floor. The handler's event is acked
        after it returns, nak'ed with ``nak_delay_s`` if it raises; undecodable messages are
        acked and logged.

        Args:
            pattern: event-type pattern, wildcards allowed (``item.*``, ``>``).
            durable: the durable consumer name (no dots, wildcards or whitespace).
            handler: ``async def handler(event: ShipEvent) -> None``.
            deliver / max_in_flight / nak_delay_s / batch / ack_wait_s: see :class:`DurableConsumer`.

        Returns:
            The running consumer; ``await consumer.stop()`` stops it (the durable is kept).

        Raises:
            InvalidNameError: invalid pattern or durable name (nothing is sent).
            StreamNotFoundError: the bus's stream does not exist (call :meth:`connect`).
        """
        validate_subject(pattern, "event pattern", wildcards=True)
        validate_consumer_name(durable, "durable name")
        _check_async(handler, "event handler")
        consumer = DurableConsumer(
            self._conn,
            stream=self.stream.name,
            filter_subject=f"{self.prefix}.{pattern}",
            durable=durable,
            handler=ship_event_handler(handler),
            deliver=deliver,
            max_in_flight=max_in_flight,
            batch=batch,
            nak_delay_s=nak_delay_s,
            ack_wait_s=ack_wait_s,
        )
        await consumer.start()
        self._consumers.append(consumer)
        return consumer


# -- the process-wide bus ------------------------------------------------------------------------

_global_bus: EventBus | None = None


def set_global_bus(bus: EventBus | None) -> None:
    """Install the bus used by :func:`emit_event` (``None`` forgets it; it is not closed)."""
    global _global_bus
    _global_bus = bus


def get_global_bus() -> EventBus:
    """The bus used by :func:`emit_event`, created on first use from the environment's NATS URL."""
    global _global_bus
    if _global_bus is None:
        _global_bus = EventBus()
    return _global_bus


async def close_global_bus() -> None:
    """Close the process-wide bus (if any) and forget it."""
    global _global_bus
    bus, _global_bus = _global_bus, None
    if bus is not None:
        await bus.close()


async def emit_event(
    event_type: str,
    payload: Any = None,
    *,
    correlation_id: str | None = None,
    msg_id: str | None = None,
) -> ShipEvent:
    """Emit through the process-wide bus, connecting it on first use (see :meth:`EventBus.emit`)."""
    bus = get_global_bus()
    if not bus.is_connected:
        await bus.connect()
    return await bus.emit(event_type, payload, correlation_id=correlation_id, msg_id=msg_id)
