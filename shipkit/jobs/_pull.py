"""Pulling only as many jobs as there are free slots: :class:`Puller`.

Each pull request asks for at most the free slots not already promised to an open request,
and gets its own inbox subscription, so every delivery and every end-of-request status (408
expired, 404/409) is attributed to its request and the promise is released exactly. A message
that arrives when no slot is free (a late delivery after a reconnect, or after ``stop``) is
returned at once with ``nak``. Idle workers keep one lingering request open (``expires_s``).

With several consumers (priority levels, highest first) free slots are filled by a *sweep*: a
``no_wait`` request to each level in turn, so a backlog of a higher level is taken before any
of a lower one; only when every level is empty does the puller linger, on all levels at once
(promising nothing: a delivery with no free slot is nak'ed), and sweeps again when something
arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit import _jetstream as _js
from shipkit.connection import ConnectionManager
from shipkit.errors import ShipkitError, translate_nats_errors
from shipkit.logging import get_logger

log = get_logger(__name__)


class _Request:
    __slots__ = ("batch", "delivered", "done", "ended", "lingering", "sub", "timer")

    def __init__(self, batch: int, *, lingering: bool = False) -> None:
        self.batch = batch
        self.lingering = lingering
        self.delivered = 0
        self.done = False
        self.ended = asyncio.Event()
        self.sub: Subscription | None = None
        self.timer: asyncio.TimerHandle | None = None


class Puller:
    """Feeds ``on_message`` at most ``capacity`` messages at a time from one pull consumer.

    Args:
        connection: the connection manager.
        stream / consumer: the pull consumer to read (several: priority levels, highest first).
        capacity: the number of slots.
        on_message: called (synchronously) with each message; the slot is taken until
            :meth:`release` is called for it.
        expires_s: how long an unfilled pull request lingers on the server.
    """

    def __init__(
        self,
        connection: ConnectionManager,
        stream: str,
        consumer: str | list[str],
        capacity: int,
        on_message: Callable[[Msg], None],
        *,
        expires_s: float = 5.0,
    ) -> None:
        self.connection = connection
        consumers = [consumer] if isinstance(consumer, str) else consumer
        self._api_subjects = [_js.pull_next_subject(stream, name) for name in consumers]
        self._api_subject = self._api_subjects[0]
        self._capacity = capacity
        self._on_message = on_message
        self._expires_s = expires_s
        self._busy = 0
        self._promised = 0
        self._open: set[_Request] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._cleanup: set[asyncio.Task[None]] = set()
        self._unlisten: Callable[[], None] | None = None
        # Refill in batches once a quarter of the slots are free: fewer, larger requests.
        self._refill_at = max(1, capacity // 4)
        # Several levels: the lingering request open per level, and whether to wait for news before sweeping.
        self._lingering: dict[str, _Request] = {}
        self._idle = False

    @property
    def busy(self) -> int:
        """Slots taken by messages handed out and not yet released."""
        return self._busy

    def start(self) -> None:
        """Begin pulling."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"shipkit-job-pull-{self._api_subject}")
            self._unlisten = self.connection.on_reconnect(self._on_reconnect)

    async def _on_reconnect(self) -> None:
        self._wake.set()  # re-pull now, not at the next 1 s check

    def release(self) -> None:
        """Free the slot of one message handed to ``on_message``."""
        self._busy -= 1
        self._wake.set()

    async def stop(self, wait_s: float = 0.0) -> None:
        """Stop asking; wait up to ``wait_s`` for open requests to end (late deliveries are nak'ed)."""
        self._stopping = True
        self._wake.set()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if wait_s > 0 and self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), wait_s)
        for request in list(self._open):
            self._close(request)
        if self._cleanup:
            await asyncio.gather(*self._cleanup, return_exceptions=True)

    async def _drained(self) -> None:
        while self._open:
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> None:
        reconnects = self._reconnects()
        while not self._stopping:
            if self._reconnects() != reconnects:
                # Pull requests do not survive a reconnect (the server may have restarted): drop them.
                reconnects = self._reconnects()
                for request in list(self._open):
                    self._close(request)
            free = self._capacity - self._busy - self._promised
            single = len(self._api_subjects) == 1
            if single:
                wanted = free >= self._refill_at or (free > 0 and not self._open)
            else:  # lingering requests promise nothing (extras are nak'ed): sweep whenever a slot is free
                own = len(self._open) - len(self._lingering)  # open sweep requests
                wanted = not self._idle and (free >= self._refill_at or (free > 0 and not own))
            if wanted:
                try:
                    if single:
                        await self._request(free, self._api_subject)
                    else:
                        await self._sweep()
                except ShipkitError as exc:  # disconnected: try again after a pause
                    log.warning("job.pull_failed", subject=self._api_subject, error=str(exc))
                    await asyncio.sleep(0.5)
                except Exception:  # a bug must not stop this worker from pulling: log, pause, go on
                    log.exception("job.pull_error", subject=self._api_subject)
                    await asyncio.sleep(0.5)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    def _reconnects(self) -> int:
        try:
            return int(self.connection.client.stats["reconnects"])
        except ShipkitError:  # not connected right now
            return -1

    async def _sweep(self) -> None:
        """Fill free slots level by level (highest first); linger on every level when all are empty."""
        for subject in self._api_subjects:
            free = self._capacity - self._busy - self._promised
            if free <= 0 or self._stopping:
                return
            request = await self._request(free, subject, no_wait=True)
            await request.ended.wait()
            if request.delivered:
                return  # slots were filled: the next sweep starts again from the highest level
        if self._stopping:
            return
        self._idle = True  # every level is empty: wait for a delivery or an expiry before sweeping again
        free = self._capacity - self._busy - self._promised
        for subject in self._api_subjects:
            if subject not in self._lingering:
                self._lingering[subject] = await self._request(free, subject, lingering=True)

    async def _request(self, batch: int, subject: str, *, no_wait: bool = False, lingering: bool = False) -> _Request:
        nc = self.connection.client
        request = _Request(batch, lingering=lingering)
        inbox = nc.new_inbox()

        async def deliver(msg: Msg) -> None:
            await self._deliver(request, msg)

        wanted: dict[str, object] = {"batch": batch, "expires": int(self._expires_s * 1e9)}
        if no_wait:
            wanted = {"batch": batch, "no_wait": True}
        body = json.dumps(wanted).encode()
        self._open.add(request)
        if not lingering:
            self._promised += batch
        # If the server forgets the request (a restart), its 408 never comes: give up on it then.
        request.timer = asyncio.get_running_loop().call_later(self._expires_s + 2.0, self._close, request)
        try:
            with translate_nats_errors(f"pull {subject}"):
                request.sub = await nc.subscribe(inbox, cb=deliver)
                await nc.publish(subject, body, reply=inbox)
        except ShipkitError:
            self._close(request)
            raise
        return request

    async def _deliver(self, request: _Request, msg: Msg) -> None:
        if _js.status_of(msg) is not None:
            status = (msg.headers or {}).get(_js.STATUS)
            if status not in _js.PULL_ENDED:
                log.debug("job.pull_status", status=status, reason=(msg.headers or {}).get(_js.DESCRIPTION))
            self._close(request)
            return
        if request.done or self._stopping or self._busy >= self._capacity:
            try:
                with translate_nats_errors("nak late delivery"):
                    await msg.nak()
            except ShipkitError as exc:  # it is redelivered after its ack_wait anyway
                log.debug("job.nak_failed", error=str(exc))
            return
        request.delivered += 1
        self._idle = False  # something arrived: the next free slot is filled by a fresh sweep
        if not request.lingering:
            self._promised -= 1
        self._busy += 1
        self._on_message(msg)
        if request.delivered >= request.batch:
            self._close(request)

    def _close(self, request: _Request) -> None:
        """Release what ``request`` still promised; unsubscribe its inbox in the background.

        Called from the inbox's own callback too, where awaiting ``unsubscribe`` would cancel
        the callback's task under us: hence the separate task.
        """
        if request.done:
            return
        request.done = True
        request.ended.set()
        if request.lingering:
            self._lingering = {k: v for k, v in self._lingering.items() if v is not request}
            self._idle = False
        else:
            self._promised -= request.batch - request.delivered
        self._open.discard(request)
        if request.timer is not None:
            request.timer.cancel()
        if request.sub is not None:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(request.sub))
            self._cleanup.add(task)
            task.add_done_callback(self._cleanup.discard)
        self._wake.set()

    async def _unsubscribe(self, sub: Subscription) -> None:
        if not self.connection.is_connected:
            return
        try:
            with translate_nats_errors("unsubscribe pull inbox"):
                await sub.unsubscribe()
        except ShipkitError as exc:  # already gone (closed connection, auto-unsubscribed)
            log.debug("job.unsubscribe_failed", error=str(exc))
