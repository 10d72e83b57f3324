"""Pipelined JetStream publishing over one reply subscription: :class:`PipelinedPublisher`.

Two ways to publish, both over one reply subscription (no task, no ``wait_for`` per message):

- ``request``: send and await the answer (record writes, dispatch, direct gets): the caller
  needs the result.
- ``post``: send and return at once; the acknowledgement is checked in the background and a
  publish that got no answer, or "no stream answered" (a restarting server), is re-sent with
  the same ``Nats-Msg-Id`` until ``retry_s`` passes. Used for counters and events, which must
  not slow a job down but must not be lost to a server restart either. ``stop`` waits for
  every post to be confirmed (``JobQueue.close`` calls it).

Named apart from :class:`shipkit.primitives.pubsub.Publisher`, the user-facing publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit import _jetstream as _js
from shipkit._failover import TRANSIENT_ERRORS, first_then_retry, new_msg_id, no_stream_answered
from shipkit._jetstream import check_ack
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    ClusterUnavailableError,
    NatsTimeoutError,
    ShipkitError,
    as_shipkit_error,
    translate_nats_errors,
)
from shipkit.logging import get_logger

__all__ = ["PipelinedPublisher", "check_ack"]

log = get_logger(__name__)

_SWEEP_S = 0.25


@dataclass(slots=True)
class _Post:
    subject: str
    data: bytes
    headers: dict[str, str] | None
    what: str
    give_up_at: float
    sent_at: float = 0.0
    attempts: int = 0
    retry_at: float | None = None


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Msg] | None = None
    post: _Post | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def _with_msg_id(headers: dict[str, str] | None) -> dict[str, str]:
    """``headers`` with a fresh ``Nats-Msg-Id`` unless they carry one (so a re-send is stored once)."""
    if headers and _js.MSG_ID in headers:
        return headers
    return {**(headers or {}), _js.MSG_ID: new_msg_id()}


class PipelinedPublisher:
    """Requests and background-confirmed posts over one reply subscription.

    Args:
        connection: the connection manager.
        retry_s: how long a post is retried before it is given up (and logged as an error).
    """

    def __init__(self, connection: ConnectionManager, *, retry_s: float = 30.0) -> None:
        self.connection = connection
        self._retry_s = retry_s
        self._pending: dict[str, _Pending] = {}
        self._posts: set[str] = set()
        self._prefix = ""
        self._next = 0
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    async def start(self) -> None:
        """Subscribe to the reply subjects and start the retry sweeper."""
        if self._sub is not None:
            return
        nc = self.connection.client
        self._prefix = nc.new_inbox() + "."
        with translate_nats_errors("subscribe job publisher replies"):
            self._sub = await nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep(), name="shipkit-job-publisher")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Wait up to ``drain_s`` for unconfirmed posts, then stop."""
        if self._posts:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_s)
        if self._posts:
            log.error("job.publisher_undrained", posts=len(self._posts), hint="counts may drift until recount()")
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for pending in self._pending.values():
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(NatsTimeoutError("job publisher stopped"))
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        self._posts.clear()
        self._drained.set()
        sub, self._sub = self._sub, None
        if sub is not None and self.connection.is_connected:
            with contextlib.suppress(ShipkitError), translate_nats_errors("unsubscribe job publisher"):
                await sub.unsubscribe()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every post so far is confirmed (or given up)."""
        if self._posts:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s or self.connection.config.request_timeout_s)

    def _token(self) -> str:
        self._next += 1
        return str(self._next)

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout_s: float | None = None
    ) -> Msg:
        """Send and await the reply message (raises :class:`NatsTimeoutError` when none comes)."""
        if self._sub is None:
            await self.start()
        token, pending, future = self._register(timeout_s)
        try:
            await self._publish(subject, data, token, headers)
            return await future
        finally:
            self._unregister(token, pending)

    async def request_many(
        self, requests: list[tuple[str, bytes, dict[str, str] | None]], *, timeout_s: float | None = None
    ) -> list[Msg]:
        """Send every ``(subject, data, headers)`` at once, then await the replies in order.

        One future per request and no task: what ``gather`` over :meth:`request` does, at a
        fraction of the cost (bulk submits).
        """
        if self._sub is None:
            await self.start()
        sent = [self._register(timeout_s) for _ in requests]
        try:
            for (subject, data, headers), (token, _, _) in zip(requests, sent, strict=True):
                await self._publish(subject, data, token, headers)
            return [await future for _, _, future in sent]
        finally:
            for token, pending, _ in sent:
                self._unregister(token, pending)

    async def publish(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """A JetStream publish, acknowledgement awaited and checked: the PubAck as a dict.

        Retried through a leader election or node loss (see :mod:`shipkit._failover`) with one
        ``Nats-Msg-Id`` (added when ``headers`` has none), so a retry is stored once.
        """
        what = f"publish {subject}"
        sent = _with_msg_id(headers)

        async def attempt() -> dict[str, Any]:
            try:
                return check_ack(await self.request(subject, data, headers=sent), what)
            except ClusterUnavailableError:
                await no_stream_answered(self.connection, subject, what)

        return await first_then_retry(what, attempt, self.connection.config.failover_timeout_s)

    async def publish_many(self, messages: list[tuple[str, bytes, dict[str, str] | None]]) -> list[dict[str, Any]]:
        """Many JetStream publishes, pipelined; the PubAcks in order (the first error answer raises).

        Each carries a ``Nats-Msg-Id``; those that met an election or no answer are re-sent one
        by one through :meth:`publish` (the id makes the ones already stored no-ops).
        """
        sent: list[tuple[str, bytes, dict[str, str] | None]] = [(s, d, _with_msg_id(h)) for s, d, h in messages]
        try:
            replies = await self.request_many(sent)
        except TRANSIENT_ERRORS:
            return [await self.publish(subject, data, headers=headers) for subject, data, headers in sent]
        acks: list[dict[str, Any]] = []
        for reply, (subject, data, headers) in zip(replies, sent, strict=True):
            try:
                acks.append(check_ack(reply, f"publish {subject}"))
            except ClusterUnavailableError:
                acks.append(await self.publish(subject, data, headers=headers))
        return acks

    def _register(self, timeout_s: float | None) -> tuple[str, _Pending, asyncio.Future[Msg]]:
        loop = asyncio.get_running_loop()
        token = self._token()
        future: asyncio.Future[Msg] = loop.create_future()
        pending = _Pending(future=future)
        self._pending[token] = pending
        pending.timer = loop.call_later(timeout_s or self.connection.config.request_timeout_s, self._expire, token)
        return token, pending, future

    def _unregister(self, token: str, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        self._pending.pop(token, None)

    async def _publish(self, subject: str, data: bytes, token: str, headers: dict[str, str] | None) -> None:
        # as_shipkit_error on the rare failure instead of a context manager on every publish
        try:
            await self.connection.client.publish(subject, data, reply=self._prefix + token, headers=headers)
        except Exception as exc:
            translated = as_shipkit_error(exc, f"publish {subject}")
            if translated is exc:
                raise
            raise translated from exc

    def _expire(self, token: str) -> None:
        pending = self._pending.get(token)
        if pending is not None and pending.future is not None and not pending.future.done():
            pending.future.set_exception(NatsTimeoutError("no answer from the server in time"))

    async def post(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None, what: str = "") -> None:
        """Publish now, confirm in the background (re-sent on no answer; pass a ``Nats-Msg-Id``)."""
        if self._sub is None:
            await self.start()
        loop = asyncio.get_running_loop()
        post = _Post(subject, data, headers, what or subject, give_up_at=loop.time() + self._retry_s)
        token = self._token()
        self._pending[token] = _Pending(post=post)
        self._posts.add(token)
        self._drained.clear()
        await self._send(token, post)

    async def _send(self, token: str, post: _Post) -> None:
        post.sent_at = asyncio.get_running_loop().time()
        post.attempts += 1
        post.retry_at = None
        try:
            await self._publish(post.subject, post.data, token, post.headers)
        except ShipkitError as exc:  # disconnected: the sweeper re-sends
            post.retry_at = post.sent_at + 0.2
            log.debug("job.post_deferred", what=post.what, error=str(exc))

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        pending = self._pending.get(token)
        if pending is None:
            return  # answered after a timeout or a re-send: already handled
        if pending.future is not None:
            if not pending.future.done():
                pending.future.set_result(msg)
            return
        post = pending.post
        if post is None:
            return
        try:
            check_ack(msg, post.what)
        except ClusterUnavailableError:  # an electing or restarting stream answers "no stream" for a moment
            post.retry_at = asyncio.get_running_loop().time() + min(0.05 * 2**post.attempts, 1.0)
            return
        except ShipkitError as exc:
            log.error("job.post_failed", what=post.what, error=str(exc))
        self._done(token)

    def _done(self, token: str) -> None:
        self._pending.pop(token, None)
        self._posts.discard(token)
        if not self._posts:
            self._drained.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                await self._sweep_once()
            except Exception:  # a bug must not leave every later post unconfirmed: log, next sweep
                log.exception("job.publisher_sweep_error")

    async def _sweep_once(self) -> None:
        """Re-send posts whose answer is overdue; give up those past their retry time."""
        now = asyncio.get_running_loop().time()
        timeout = self.connection.config.request_timeout_s
        for token in list(self._posts):
            pending = self._pending.get(token)
            post = pending.post if pending is not None else None
            if post is None:
                self._done(token)
                continue
            due = post.retry_at if post.retry_at is not None else post.sent_at + timeout
            if now < due:
                continue
            if now > post.give_up_at:
                log.error("job.post_failed", what=post.what, error="no acknowledgement", attempts=post.attempts)
                self._done(token)
                continue
            with contextlib.suppress(ShipkitError):
                await self._send(token, post)
