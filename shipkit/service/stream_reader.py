"""The caller's side of a streamed reply: :class:`StreamReader` reads one stream's raw messages.

It subscribes a fresh inbox, publishes the request, and hands out messages until the
terminator (an empty body without ``Nats-Service-Error`` headers), an error message, or a
single non-stream reply (a first message without the ``Shipkit-Stream`` header: an ordinary
handler answered). Silence longer than the inactivity timeout raises
:class:`~shipkit.errors.NatsTimeoutError`. :meth:`StreamReader.aclose` before the end publishes
the cancel signal, so the handler's generator is closed. :class:`~shipkit.service.client.Client`
(typed chunks) and :mod:`shipkit.agents` (the agent protocol) build on it.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit.errors import NatsTimeoutError, as_shipkit_error
from shipkit.service.endpoint import ERROR_CODE_HEADER
from shipkit.service.streaming import STREAM_HEADER

__all__ = ["StreamReader", "is_terminator"]

_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


def is_terminator(msg: Msg) -> bool:
    """The end of a stream: an empty body without error headers (other headers allowed)."""
    return not msg.data and ERROR_CODE_HEADER not in (msg.headers or {})


class StreamReader:
    """One streamed request, read message by message.

    Args:
        nc: the connected nats-py client.
        subject: where the request goes.
        body: the encoded request.
        headers: request headers, if any.
        inactivity_timeout_s: the longest silence tolerated between two messages.
        single_reply_ok: a first message without the ``Shipkit-Stream`` header is a whole
            ordinary reply (True, for handlers); False reads on to the terminator (the agent
            protocol, whose hosts need not know the header).
    """

    def __init__(
        self,
        nc: NatsClient,
        subject: str,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        inactivity_timeout_s: float = 30.0,
        single_reply_ok: bool = True,
    ) -> None:
        self.nc = nc
        self.subject = subject
        self.body = body
        self.headers = headers
        self.inactivity_timeout_s = inactivity_timeout_s
        self.single_reply_ok = single_reply_ok
        self.cancel_subject: str | None = None
        self.done = False
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self._first = True
        self._abandoned = False
        self._closing: asyncio.Future[None] | None = None

    async def start(self) -> StreamReader:
        """Subscribe the inbox, then publish the request."""
        inbox = self.nc.new_inbox()
        try:
            self._subscription = await self.nc.subscribe(inbox, cb=self._on_msg)
            await self.nc.publish(self.subject, self.body, reply=inbox, headers=self.headers)
        except Exception as exc:
            await self.aclose()
            raise as_shipkit_error(exc, f"stream request to {self.subject}") from exc
        return self

    async def _on_msg(self, msg: Msg) -> None:
        if not self._abandoned:
            self._queue.put_nowait(msg)
            return
        # Closed before the first message: cancel as soon as the stream says how, then stop.
        cancel_subject = (msg.headers or {}).get(STREAM_HEADER)
        self._abandoned = False
        try:
            if cancel_subject is not None and msg.data:
                await self.nc.publish(cancel_subject, b"")
        finally:
            await self._unsubscribe()

    async def next(self) -> Msg | None:
        """The next message to decode, or None once the stream ended.

        An error message is returned (the caller raises it) and ends the stream.

        Raises:
            NatsTimeoutError: nothing arrived within the inactivity timeout, or nobody listens.
        """
        if self.done:
            return None
        queue = self._queue
        if queue.empty():
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the caller's cancel
                async with asyncio.timeout(self.inactivity_timeout_s):
                    msg = await queue.get()
            except TimeoutError:
                raise NatsTimeoutError(
                    f"stream from {self.subject!r}: nothing for {self.inactivity_timeout_s}s"
                ) from None
        else:
            msg = queue.get_nowait()
        headers = msg.headers or {}
        first, self._first = self._first, False
        if first:
            if headers.get(_STATUS_HEADER) == _NO_RESPONDERS and not msg.data:
                self.done = True
                raise NatsTimeoutError(f"stream from {self.subject!r}: no responders")
            self.cancel_subject = headers.get(STREAM_HEADER)
            if self.cancel_subject is None and self.single_reply_ok:  # an ordinary reply: it is the whole stream
                self.done = True
                return msg if msg.data or ERROR_CODE_HEADER in headers else None
        if ERROR_CODE_HEADER in headers:
            self.done = True
            return msg
        if not msg.data:
            self.done = True
            return None
        return msg

    async def aclose(self) -> None:
        """Stop reading: cancel the stream at its source when it has not ended, unsubscribe.

        Closed before the stream's first message, the inbox stays subscribed until that message
        (which names the cancel subject) or the inactivity timeout, whichever comes first.
        """
        if not self.done and self._first and not self._queue.empty():  # it arrived, unread
            first = self._queue.get_nowait()
            self._first = False
            self.cancel_subject = (first.headers or {}).get(STREAM_HEADER) if first.data else None
        if not self.done and self._first and self._subscription is not None and self.nc.is_connected:
            self.done = self._abandoned = True
            asyncio.get_running_loop().call_later(self.inactivity_timeout_s, self._give_up)
            return
        if not self.done and self.cancel_subject is not None and self.nc.is_connected:
            self.done = True
            try:
                await self.nc.publish(self.cancel_subject, b"")
            except Exception as exc:  # the cancel is best effort; the handler still ends on its own
                raise as_shipkit_error(exc, f"cancelling the stream from {self.subject}") from exc
            finally:
                await self._unsubscribe()
            return
        self.done = True
        await self._unsubscribe()

    def _give_up(self) -> None:
        if self._abandoned:
            self._abandoned = False
            subscription, self._subscription = self._subscription, None
            if subscription is not None and not self.nc.is_closed:
                self._closing = asyncio.ensure_future(subscription.unsubscribe())

    async def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None and not self.nc.is_closed:
            await subscription.unsubscribe()
