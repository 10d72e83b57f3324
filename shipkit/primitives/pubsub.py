"""Fire-and-forget events over core NATS: :class:`Publisher`, :class:`Subscriber`, :class:`PubSub`.

Wire contract §1 and §3: ``emit(type, payload)`` publishes an :class:`~shipkit.models.Event` to the
subject equal to the type (``heartbeat``, ``deploy.started``); ``emit_being(id, type, payload)``
publishes to ``{id}.{type}`` with ``event_type`` = the bare type. Nothing is stored: if nobody
listens, the message is gone. Subscribers register handlers for patterns with wildcards
(``*.heartbeat``, ``deploy.>``); an undecodable message is logged and dropped, a failing handler
is logged, and the subscription keeps running either way::

    async with PubSub("agent-1", "nats://localhost:4222") as bus:
        async def on_heartbeat(event: Event) -> None:
            print(event.source, event.payload)

        bus.subscribe("*.heartbeat", on_heartbeat)
        await bus.start()
        await bus.emit_being("agent-1", EventType.HEARTBEAT, {"load": 0.3})

Handlers of one subscription run one at a time, in arrival order (as with raw nats-py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import ValidationError

from shipkit._names import validate_subject, validate_token
from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import ConfigurationError, SerializationError, translate_nats_errors
from shipkit.logging import get_logger
from shipkit.models import Event

__all__ = ["EventHandler", "EventType", "PubSub", "Publisher", "Subscriber"]

log = get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]
"""An async handler of pub/sub events."""


class EventType(str):
    """A pub/sub event type; its value is the subject it is published on.

    The seed's variants are constants (``EventType.HEARTBEAT``, ``STARTED``, ``STOPPED``,
    ``ERROR``); any other type is ``EventType.custom("deploy.started")``. Types may contain dots
    but no wildcards, whitespace or empty tokens; a plain ``str`` works wherever an
    ``EventType`` is accepted.
    """

    __slots__ = ()

    HEARTBEAT: ClassVar[EventType]
    STARTED: ClassVar[EventType]
    STOPPED: ClassVar[EventType]
    ERROR: ClassVar[EventType]

    def __new__(cls, value: str) -> Self:
        validate_subject(value, "event type")
        return super().__new__(cls, value)

    @classmethod
    def custom(cls, name: str) -> EventType:
        """A custom event type (seed: ``EventType::Custom``).

        Raises:
            InvalidNameError: ``name`` is empty or holds whitespace or wildcards.
        """
        return cls(name)

    @property
    def subject(self) -> str:
        """The subject events of this type are published on (the type itself)."""
        return str.__str__(self)

    def with_entity(self, entity_id: str) -> str:
        """The per-entity subject ``{entity_id}.{type}`` (e.g. ``being-1.heartbeat``).

        Raises:
            InvalidNameError: ``entity_id`` is empty or holds dots, whitespace or wildcards.
        """
        validate_token(entity_id, "entity id")
        return f"{entity_id}.{self.subject}"

    def __repr__(self) -> str:
        return f"EventType({self.subject!r})"


EventType.HEARTBEAT = EventType("heartbeat")
EventType.STARTED = EventType("started")
EventType.STOPPED = EventType("stopped")
EventType.ERROR = EventType("error")


def _event(event_type: str, source: str, payload: Any, correlation_id: str | None) -> Event:
    try:
        return Event(event_type=event_type, source=source, payload=payload, correlation_id=correlation_id)
    except ValidationError as exc:
        raise SerializationError(f"cannot build an Event of type {event_type!r}: {exc}") from exc


class Publisher(ConnectionOwner):
    """Publishes :class:`~shipkit.models.Event` envelopes over core NATS (no persistence).

    Args:
        source: written into every event's ``source`` (this agent's name).
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
    """

    def __init__(self, source: str = "", connection: ConnectionManager | NatsConfig | str | None = None) -> None:
        super().__init__(connection)
        self.source = source

    async def emit(
        self, event_type: EventType | str, payload: Any = None, *, correlation_id: str | None = None
    ) -> Event:
        """Publish an event on the subject equal to its type; returns the event sent.

        Raises:
            InvalidNameError: the type is empty or holds whitespace or wildcards (nothing is sent).
            SerializationError: the payload is not JSON-able.
            NotConnectedError: called before :meth:`connect`.
        """
        subject = str(validate_subject(event_type, "event type"))
        event = _event(subject, self.source, payload, correlation_id)
        await self.publish(subject, event.to_json())
        return event

    async def emit_being(
        self,
        being_id: str,
        event_type: EventType | str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
    ) -> Event:
        """Publish an event about one being on ``{being_id}.{type}``; ``event_type`` stays bare.

        Raises:
            InvalidNameError: ``being_id`` is not a single token, or the type is invalid.
            SerializationError: the payload is not JSON-able.
            NotConnectedError: called before :meth:`connect`.
        """
        bare = str(validate_subject(event_type, "event type"))
        validate_token(being_id, "being id")
        event = _event(bare, self.source, payload, correlation_id)
        await self.publish(f"{being_id}.{bare}", event.to_json())
        return event

    async def publish(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None) -> None:
        """Publish raw bytes on ``subject`` (no envelope).

        Raises:
            InvalidNameError: the subject is empty or holds whitespace or wildcards.
            PayloadTooLargeError: ``data`` exceeds the server's ``max_payload``.
            NotConnectedError: called before :meth:`connect`.
        """
        validate_subject(subject, "subject")
        client = self.connection.client
        with translate_nats_errors(f"publish {subject}"):
            await client.publish(subject, data, headers=headers)


@dataclass(frozen=True, slots=True)
class _Registration:
    pattern: str
    handler: EventHandler
    queue: str | None


class Subscriber(ConnectionOwner):
    """Dispatches pub/sub events matching registered patterns to async handlers.

    Register with :meth:`subscribe` (before :meth:`start`), then :meth:`start` to activate the
    subscriptions, or :meth:`run` to start and wait until :meth:`stop` or :meth:`close`.

    Args:
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
    """

    def __init__(self, connection: ConnectionManager | NatsConfig | str | None = None) -> None:
        super().__init__(connection)
        self._registrations: list[_Registration] = []
        self._subscriptions: list[Any] = []
        self._started = False
        self._closed = False
        self._stopped: asyncio.Event | None = None
        self._lifecycle = asyncio.Lock()  # a stop() during start() waits for it, then stops

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    def subscribe(self, pattern: str, handler: EventHandler, *, queue: str | None = None) -> None:
        """Register ``handler`` for events on subjects matching ``pattern``.

        Args:
            pattern: a subject with optional wildcards (``heartbeat``, ``*.heartbeat``, ``deploy.>``).
            handler: ``async def handler(event: Event) -> None``.
            queue: a queue group: each message goes to one member of the group only.

        Raises:
            InvalidNameError: the pattern or queue group is invalid.
            ConfigurationError: the handler is not async, or the subscriber already started.
        """
        validate_subject(pattern, "subscription pattern", wildcards=True)
        if queue is not None:
            validate_subject(queue, "queue group")
        if (inspect.isfunction(handler) or inspect.ismethod(handler)) and not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(f"handler {handler.__qualname__} for {pattern!r} must be an async function")
        if self._started:
            raise ConfigurationError(f"cannot subscribe to {pattern!r}: the subscriber is running (register first)")
        self._registrations.append(_Registration(pattern, handler, queue))

    async def start(self) -> None:
        """Activate every registered subscription (they receive messages from now on).

        Raises:
            NotConnectedError: called before :meth:`connect`.
        """
        async with self._lifecycle:
            await self._start()

    async def _start(self) -> None:
        if self._started:
            return
        client = self.connection.client
        self._stopped = asyncio.Event()
        try:
            for registration in self._registrations:
                with translate_nats_errors(f"subscribe {registration.pattern}"):
                    sub = await client.subscribe(
                        registration.pattern, queue=registration.queue or "", cb=_dispatcher(registration)
                    )
                self._subscriptions.append(sub)
            await self.connection.confirm_sent()
        except BaseException:
            await self._unsubscribe_all(drain_timeout_s=0)
            raise
        self._started = True
        log.debug("pubsub.started", patterns=[r.pattern for r in self._registrations])

    async def connect(self) -> Self:
        """Connect (if the manager is not connected yet); returns ``self``."""
        self._closed = False
        return await super().connect()

    async def run(self) -> None:
        """Start (if needed) and wait until :meth:`stop` or :meth:`close` is called.

        Returns at once if :meth:`close` was called before (e.g. while this task was scheduled).
        """
        if self._closed:
            return
        await self.start()
        assert self._stopped is not None  # set by start()
        await self._stopped.wait()

    async def stop(self, *, drain_timeout_s: float = 5.0) -> None:
        """Stop receiving; messages already received are handled for up to ``drain_timeout_s``.

        Idempotent; the connection stays open (see :meth:`close`).
        """
        async with self._lifecycle:
            if not self._started:
                return
            self._started = False
            await self._unsubscribe_all(drain_timeout_s)
            if self._stopped is not None:
                self._stopped.set()
        log.debug("pubsub.stopped")

    async def _unsubscribe_all(self, drain_timeout_s: float) -> None:
        subs, self._subscriptions = self._subscriptions, []
        if not subs or not self.connection.is_connected:
            return
        if drain_timeout_s <= 0:
            for sub in subs:
                await _force_unsubscribe(sub)
            return
        drains = [asyncio.ensure_future(sub.drain()) for sub in subs]
        _, pending = await asyncio.wait(drains, timeout=drain_timeout_s)
        for future in pending:
            future.cancel()
        for sub, future in zip(subs, drains, strict=True):
            # a drain that timed out or failed still leaves interest on the server: remove it
            if future in pending or future.cancelled() or future.exception() is not None:
                await _force_unsubscribe(sub)

    async def close(self) -> None:
        """Stop the subscriptions, then close the connection if this object created it."""
        self._closed = True
        await super().close()

    async def _teardown(self) -> None:
        await self.stop()


async def _force_unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # already closed, or the connection is gone: nothing left to release
        log.debug("pubsub.unsubscribe_failed", subject=sub.subject, error=f"{type(exc).__name__}: {exc}")


def _dispatcher(registration: _Registration) -> Callable[[Any], Awaitable[None]]:
    """The nats-py callback for one registration: decode, call, never raise."""
    handler, pattern = registration.handler, registration.pattern

    async def dispatch(msg: Any) -> None:
        try:
            event = Event.from_json(msg.data)
        except SerializationError as exc:
            log.warning("message.undecodable", subject=msg.subject, pattern=pattern, reason=str(exc)[:300])
            return
        try:
            await handler(event)
        except Exception:
            log.exception("handler.failed", subject=msg.subject, pattern=pattern, event_type=event.event_type)

    return dispatch


class PubSub(Publisher, Subscriber):
    """A :class:`Publisher` and a :class:`Subscriber` on one connection.

    Args:
        source: written into every emitted event's ``source``.
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
    """

    def __init__(self, source: str = "", connection: ConnectionManager | NatsConfig | str | None = None) -> None:
        super().__init__(source, connection)
