"""A durable JetStream pull consumer feeding an async handler: :class:`DurableConsumer`.

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

"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Self

from nats.js import api

from shipkit import _tracing
from shipkit._jetstream import pull_next_subject
from shipkit._json import dumps
from shipkit._names import validate_consumer_name, validate_stream_name, validate_subject
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    JS_ERR_CONSUMER_NOT_FOUND,
    ConfigurationError,
    JetStreamError,
    ProvisioningError,
    SerializationError,
    translate_nats_errors,
)
from shipkit.logging import get_logger
from shipkit.models import ShipEvent

__all__ = [
    "DeliverPolicyName",
    "DurableConsumer",
    "MsgHandler",
    "ShipEventHandler",
    "check_async",
    "ship_event_handler",
]

log = get_logger(__name__)

DeliverPolicyName = Literal["all", "new"]
"""Where a *new* durable starts: every retained message, or only those published from now on."""

MsgHandler = Callable[[Any], Awaitable[None]]
"""An async handler of one raw nats-py ``Msg`` (what :class:`DurableConsumer` calls)."""

ShipEventHandler = Callable[[ShipEvent], Awaitable[None]]
"""An async handler of one decoded :class:`~shipkit.models.ShipEvent`."""

_NS = 1_000_000_000
_FIRST_RETRY_S = 0.1  # first pause before re-pulling after a 409/503 (doubles up to heartbeat_s)


def ship_event_handler(handler: ShipEventHandler) -> MsgHandler:
    """Adapt a ``(ShipEvent) -> Awaitable`` handler to the raw-message handler of a consumer.

    A body that is not a ``ShipEvent`` raises :class:`SerializationError`, which the consumer
    acks and logs.
    """

    async def on_msg(msg: Any) -> None:
        await handler(ShipEvent.from_json(msg.data))

    return on_msg


def check_async(handler: Callable[..., Any], what: str) -> None:
    """Refuse a plain function where an async handler is required (at registration, not per message)."""
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
        check_async(handler, "consumer handler")
        if deliver not in ("all", "new"):
            raise ConfigurationError(f"deliver must be 'all' or 'new', got {deliver!r}")
        if max_in_flight < 1 or batch < 1:
            raise ConfigurationError(f"max_in_flight and batch must be >= 1 (got {max_in_flight}, {batch})")
        if nak_delay_s < 0 or ack_wait_s <= 0 or heartbeat_s <= 0 or expires_s < 2 * heartbeat_s:
            raise ConfigurationError(
                "need nak_delay_s >= 0, ack_wait_s > 0, heartbeat_s > 0 and expires_s >= 2 * heartbeat_s"
            )
        self._connection = connection
        self._handler = _tracing.consumer_handler(handler, self.durable)  # decided once: traced or not
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
        self._pull_subject = pull_next_subject(self.stream, self.durable)
        self._requested = 0  # messages asked for in open pull requests, not yet delivered
        self._busy = 0  # handlers running now
        self._avg_handler_s: float | None = None
        self._last_activity = 0.0
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._unlisten: Callable[[], None] | None = None
        self._retrying: set[asyncio.Future[None]] = set()
        self._retry_delay_s = _FIRST_RETRY_S
        self._retry: asyncio.TimerHandle | None = None

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
        client = self._connection.client
        await self._ensure_consumer()
        self._inbox = client.new_inbox()
        with translate_nats_errors(f"subscribe to pull inbox of {self.stream}/{self.durable}"):
            self._sub = await client.subscribe(self._inbox, cb=self._on_message)
        self._state = "running"
        self._last_activity = time.monotonic()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._max_in_flight)]
        self._watchdog = asyncio.create_task(self._watch())
        self._unlisten = self._connection.on_reconnect(self._rearm)
        await self._maybe_pull()
        log.debug("consumer.started", stream=self.stream, durable=self.durable, filter=self.filter_subject)
        return self

    async def info(self) -> Any:
        """The server's current ``ConsumerInfo`` for this durable (pending, ack floor ...)."""
        with translate_nats_errors(f"consumer info {self.stream}/{self.durable}"):
            return await self._connection.jetstream.consumer_info(self.stream, self.durable)

    async def _ensure_consumer(self) -> Any:
        js = self._connection.jetstream
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
        if self._connection.provision == "verify":
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

    async def _rearm(self) -> None:
        """The connection is back: pull requests sent before are gone with the old socket."""
        self._requested = 0
        self._last_activity = time.monotonic()
        self._retry_delay_s = _FIRST_RETRY_S
        await self._maybe_pull()

    def _pull_soon(self) -> None:
        """Re-pull after a short, growing pause (a consumer electing its leader answers 503)."""
        if self._retry is not None or self._state != "running":
            return
        delay, self._retry_delay_s = self._retry_delay_s, min(self._retry_delay_s * 2, self._heartbeat_s)

        def fire() -> None:
            self._retry = None
            self._requested = 0
            task = asyncio.ensure_future(self._maybe_pull())
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)

        self._retry = asyncio.get_running_loop().call_later(delay, fire)

    async def _on_message(self, msg: Any) -> None:
        self._last_activity = time.monotonic()
        if not msg.reply:  # JetStream data messages always carry an ack subject; this is a status
            await self._on_status(msg.headers or {})
            return
        self._retry_delay_s = _FIRST_RETRY_S
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
        # 409 (refused or cut short by the server), 503 (no consumer leader: an election, a
        # restart): retry with a growing pause, so resuming is quick and a persistent problem
        # does not turn into a tight loop
        log.warning("consumer.pull_failed", durable=self.durable, status=status, reason=_description(headers))
        self._pull_soon()

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
            await self._connection.client.publish(self._pull_subject, request, reply=self._inbox)
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
        if self._unlisten is not None:
            self._unlisten()
        if self._retry is not None:
            self._retry.cancel()
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
        if self._connection.is_connected:
            try:
                await self._connection.client.flush()  # push the last acks/naks out of the write buffer now
            except Exception as exc:
                log.debug("consumer.flush_failed", durable=self.durable, error=f"{exc!r}")
        self._state = "stopped"
        log.debug("consumer.stopped", stream=self.stream, durable=self.durable)

    async def _close_intake(self) -> None:
        """Remove interest in the pull inbox; messages already on the way are nak'ed by the callback."""
        sub, self._sub = self._sub, None
        if sub is None or not self._connection.is_connected:
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
