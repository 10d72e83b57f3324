"""Durable events on JetStream: :class:`EventBus`, and the :class:`DurableConsumer` loop behind it.

Wire contract §1 to §3. :meth:`EventBus.emit` (also under the seed's name, ``emit_event``)
publishes a :class:`~shipkit.models.ShipEvent` to ``{prefix}.{event_type}`` (default
``ship.events.{event_type}``, stream ``SHIP_EVENTS``) and waits for the JetStream ack;
:meth:`EventBus.publish_event` sends a prepared event; :meth:`EventBus.emit_many` pipelines many
publishes (send all, then await
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

The consume loop behind :meth:`EventBus.subscribe` is :class:`~shipkit.primitives.consumer.DurableConsumer`
(also used by channels and ``@service.on_event``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Self

from pydantic import ValidationError

from shipkit import _tracing
from shipkit._failover import TRANSIENT_ERRORS, new_msg_id, publish_acked
from shipkit._names import validate_consumer_name, validate_subject
from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import (
    ConfigurationError,
    SerializationError,
    StreamNotFoundError,
    as_shipkit_error,
    translate_nats_errors,
)
from shipkit.logging import get_logger
from shipkit.models import ShipEvent
from shipkit.primitives.consumer import (
    DeliverPolicyName,
    DurableConsumer,
    MsgHandler,
    ShipEventHandler,
    check_async,
    ship_event_handler,
)

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

log = get_logger(__name__)

_MSG_ID_HEADER = "Nats-Msg-Id"


class EventBus(ConnectionOwner):
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
        super().__init__(connection)
        self.prefix = validate_subject(prefix, "event prefix")
        self.stream = stream or StreamConfig.event_bus(prefix=prefix)
        self.source = source
        self._consumers: list[DurableConsumer] = []
        self._connect_lock = asyncio.Lock()
        self._ready = False
        self._tracer = _tracing.tracer()  # decided once: publishes are traced or not

    def _copy(self, **changes: Any) -> EventBus:
        options: dict[str, Any] = {"stream": self.stream, "prefix": self.prefix, "source": self.source, **changes}
        bus = EventBus(self.connection, **options)
        bus._owns_connection = self._owns_connection
        return bus

    def with_stream(self, stream: StreamConfig, prefix: str = "ship.events") -> EventBus:
        """A bus on a custom stream and prefix (seed: ``EventBus::with_stream``); use it instead of this one."""
        return self._copy(stream=stream, prefix=prefix)

    def with_source(self, source: str) -> EventBus:
        """A bus that stamps ``source`` on its events (seed: ``.with_source``); use it instead of this one."""
        return self._copy(source=source)

    @property
    def is_connected(self) -> bool:
        """True after :meth:`connect` while the connection is open."""
        return self._ready and self.connection.is_connected

    async def connect(self) -> Self:
        """Connect if needed and make sure the stream exists; returns ``self``.

        Concurrent calls provision the stream once (they wait for each other).

        Raises:
            NatsConnectionError: the server cannot be reached.
            ProvisioningError: the stream is missing and the connection is in verify mode.
        """
        async with self._connect_lock:
            return await super().connect()

    async def _setup(self) -> None:
        await self.connection.ensure_stream(self.stream)
        self._ready = True

    async def _teardown(self) -> None:
        """Stop the consumers this bus started (newest first)."""
        consumers, self._consumers = self._consumers, []
        for consumer in reversed(consumers):
            await consumer.stop()
        self._ready = False

    # -- publishing ----------------------------------------------------------------------------

    def new_event(self, event_type: str, payload: Any = None, *, correlation_id: str | None = None) -> ShipEvent:
        """A ``ShipEvent`` stamped now with this bus's source (not sent).

        Raises:
            ConfigurationError: ``event_type`` is a ``ShipEvent`` (send a prepared event with
                :meth:`publish_event`).
        """
        if isinstance(event_type, ShipEvent):
            raise ConfigurationError(
                "emit_event(event_type, payload) takes a type and a payload, as in noesis-ship; "
                "publish a prepared ShipEvent with publish_event(event)"
            )
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
            StreamNotFoundError: no stream captures the subject (checked; the message names it).
            ClusterUnavailableError: no stream leader answered within the connection's
                ``failover_timeout_s`` (publishes are retried through an election; a retry is
                never stored twice: each carries a ``Nats-Msg-Id``).
        """
        event = self.new_event(event_type, payload, correlation_id=correlation_id)
        await self.publish_event(event, msg_id=msg_id)
        return event

    emit_event = emit
    """The seed's name of :meth:`emit` (``bus.emit_event(event_type, payload)``), same arguments and result."""

    async def publish_event(self, event: ShipEvent, *, msg_id: str | None = None) -> None:
        """Publish a prepared ``ShipEvent`` to ``{prefix}.{event.event_type}``, ack awaited.

        Raises the same errors as :meth:`emit`.
        """
        subject, data, headers = self._prepare(event, msg_id)
        if self._tracer is not None:
            attributes = {"messaging.message.id": msg_id, "messaging.message.conversation_id": event.correlation_id}
            await _tracing.send(
                self._tracer, subject, headers, lambda h: self._publish(subject, data, h), attributes=attributes
            )
            return
        await self._publish(subject, data, headers)

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> Any:
        return await publish_acked(
            self.connection, subject, data, headers=headers, what=f"event bus publish to {subject!r}"
        )

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
            ClusterUnavailableError: acks still missing after ``timeout_s`` and the re-sends
                through the failover deadline (each event carries a ``Nats-Msg-Id``, so
                re-sending never stores one twice).
        """
        batch = [e if isinstance(e, ShipEvent) else self.new_event(e[0], e[1]) for e in events]
        ids = list(msg_ids) if msg_ids is not None else [None] * len(batch)
        if len(ids) != len(batch):
            raise ConfigurationError(f"msg_ids has {len(ids)} entries for {len(batch)} events")
        prepared = [self._prepare(event, msg_id) for event, msg_id in zip(batch, ids, strict=True)]
        js = self.connection.jetstream
        timeout = timeout_s if timeout_s is not None else self.connection.config.request_timeout_s
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
        # Those without an answer or with "no stream answered" (an election, a restart) are
        # re-sent one by one with the same Nats-Msg-Id: stored once, whatever happened before.
        resend: list[tuple[str, bytes, dict[str, str]]] = []
        for future, message in zip(futures, prepared, strict=True):
            exc = None if future in pending else future.exception()
            if future in pending or (exc is not None and isinstance(as_shipkit_error(exc), TRANSIENT_ERRORS)):
                resend.append(message)
            elif exc is not None:
                with translate_nats_errors(f"event bus pipelined publish of {len(batch)} events: not stored"):
                    raise exc
        try:
            for subject, data, headers in resend:
                await publish_acked(self.connection, subject, data, headers=headers, what=f"publish to {subject!r}")
        except StreamNotFoundError as exc:
            raise StreamNotFoundError(
                f"event bus pipelined publish: {len(resend)} of {len(batch)} events not stored: {exc}",
                err_code=exc.err_code,
            ) from exc
        return batch

    def _prepare(self, event: ShipEvent, msg_id: str | None) -> tuple[str, bytes, dict[str, str]]:
        validate_subject(event.event_type, "event type")
        subject = f"{self.prefix}.{event.event_type}"
        return subject, event.to_json(), {_MSG_ID_HEADER: msg_id or new_msg_id()}

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
        check_async(handler, "event handler")
        consumer = DurableConsumer(
            self.connection,
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
