"""Streamed replies: a handler written as an async generator sends each value it yields.

The wire contract (``docs/agents.md`` draws it)::

    caller ──request (reply = inbox)──► {prefix}.{command}
    ◄── chunk 1  (header Shipkit-Stream: <cancel subject>)
    ◄── chunk 2 … chunk n                       each encoded like a normal reply
    ◄── empty body, no error headers            the terminator
        or, on a failure after the first chunk: Nats-Service-Error(-Code) headers, then the terminator

A failure before the first chunk is today's single error reply. A stream with no chunk sends
only the terminator, carrying the ``Shipkit-Stream`` header. A caller that stops reading
publishes one empty message to the cancel subject; the handler's generator is then closed
(its ``finally`` runs). Callers that do not know the header ignore it.

Backpressure: each chunk is published before the generator is resumed, and when the
connection's outgoing buffer holds more than :data:`FLUSH_AT_BYTES` the stream waits for the
server to take it (a flush round trip), so a fast generator never runs far ahead of the socket.
After the first chunk, and whenever :data:`WRITE_AT_BYTES` are buffered, the stream yields to the
event loop once, so nats-py's flusher sends them now instead of after the generator's next
suspension: a fast first chunk, and the caller reads while the generator still produces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID
from pydantic import ValidationError

from shipkit.logging import get_logger
from shipkit.service.codec import Signature, encode_result
from shipkit.service.context import Context
from shipkit.service.endpoint import Endpoint, describe_failure, error_reply
from shipkit.service.host import Host
from shipkit.service.specs import HandlerSpec

__all__ = ["FLUSH_AT_BYTES", "STREAM_HEADER", "WRITE_AT_BYTES", "StreamCancels", "StreamEndpoint"]

log = get_logger("shipkit.stream")

STREAM_HEADER = "Shipkit-Stream"
"""Header of a stream's first message; its value is the subject that cancels the stream."""

FLUSH_AT_BYTES = 64 * 1024
"""Outgoing bytes buffered in the client after which a stream waits for the server (a flush)."""

WRITE_AT_BYTES = 8 * 1024
"""Outgoing bytes after which a stream yields to the event loop once, so nats-py's flusher writes
them: the caller starts reading while the generator still produces (the two overlap)."""


class StreamCancels:
    """The cancel subjects of one runtime's streams: one wildcard subscription, a token per stream.

    Args:
        instance_id: the runtime's instance id (keeps subjects unique across processes).
    """

    def __init__(self, instance_id: str) -> None:
        self.prefix = f"_SHIPKIT.cancel.{instance_id}"
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        self._nuid = NUID()
        self._subscription: Subscription | None = None

    async def start(self, nc: NatsClient) -> None:
        """Subscribe to ``_SHIPKIT.cancel.{instance}.*``."""
        self._subscription = await nc.subscribe(f"{self.prefix}.*", cb=self._on_cancel)

    async def stop(self) -> None:
        """Unsubscribe (after in-flight streams ended or were cancelled)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception as exc:  # closed with its connection already: nothing left to stop
                log.debug("stream.cancel_unsubscribe_failed", error=repr(exc))

    def register(self, task: asyncio.Task[Any]) -> tuple[str, str]:
        """A token and the cancel subject for the stream running in ``task``."""
        token = self._nuid.next().decode()  # unguessable: nobody cancels a stream they were not told of
        self._tasks[token] = task
        return token, f"{self.prefix}.{token}"

    def unregister(self, token: str) -> bool:
        """Forget a stream; True when its caller had cancelled it."""
        self._tasks.pop(token, None)
        if token in self._cancelled:
            self._cancelled.discard(token)
            return True
        return False

    async def _on_cancel(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        task = self._tasks.get(token)
        if task is not None and token not in self._cancelled:
            self._cancelled.add(token)
            task.cancel()


class _Progress:
    """How many chunks of one stream went out (read after the generator stopped, however it stopped)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0


class StreamEndpoint(Endpoint):
    """An :class:`Endpoint` whose handler is an async generator: every request is streamed.

    Each request runs in a task the host tracks (shutdown waits for it, then cancels it:
    the caller gets a 503 error and the terminator). The request counts once in ``$SRV.STATS``,
    its processing time being the whole stream's.
    """

    __slots__ = ("cancels",)

    def __init__(
        self,
        host: Host,
        name: str,
        subject: str,
        func: Callable[..., AsyncGenerator[Any, None]],
        signature: Signature,
        *,
        cancels: StreamCancels,
        max_concurrency: int,
        queue_group: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            host,
            name,
            subject,
            func,  # type: ignore[arg-type]  # an async generator function, called the same way
            signature,
            max_concurrency=max_concurrency,
            queue_group=queue_group,
            metadata=metadata,
        )
        self.cancels = cancels

    @classmethod
    def from_spec(cls, host: Host, spec: HandlerSpec, cancels: StreamCancels) -> StreamEndpoint:
        """The endpoint of a streaming ``@service.handler``."""
        return cls(
            host,
            spec.endpoint_name,
            spec.subject,
            spec.func,  # type: ignore[arg-type]  # an async generator function
            spec.signature,
            cancels=cancels,
            max_concurrency=spec.max_concurrency,
            queue_group=spec.queue,
            metadata=spec.metadata,
        )

    async def handle(self, msg: Msg) -> None:
        """Decode the request, then stream the generator's values in a tracked task."""
        # The prelude repeats Endpoint.handle's on purpose: sharing it would add a call to the
        # benchmarked non-streaming path (bench/bench_runtime.py), which must not get slower.
        started = time.perf_counter_ns()
        self.num_requests += 1
        signature = self.signature
        try:
            payload = signature.from_bytes(msg.data) if signature.payload_param is not None else None
        except (ValidationError, ValueError) as exc:
            await self._failed(msg, exc, started, decoding=True)
            return
        context = (
            Context(self.host, msg.subject, msg.headers, msg.reply) if signature.context_param is not None else None
        )
        if self.in_flight >= self.max_concurrency:
            await self._wait_for_slot()
        generator = self.func(*signature.call_args(payload, context))
        self._spawn(self._stream(msg, generator, started))  # type: ignore[arg-type]

    async def _stream(self, msg: Msg, generator: AsyncGenerator[Any, None], started: int) -> None:
        task = asyncio.current_task()
        assert task is not None  # always run by _spawn as a task
        token, cancel_subject = self.cancels.register(task)
        progress = _Progress()
        try:
            await self._pump(msg, generator, cancel_subject, progress)
        except asyncio.CancelledError:
            if self.cancels.unregister(token):  # the caller asked: close quietly, nobody listens
                task.uncancel()
                self._count(started, cancelled=True)
                log.info("stream.cancelled", endpoint=self.name, subject=msg.subject, chunks=progress.sent)
                return
            self._count(started, cancelled=True)
            await self._end_with_error(
                msg, 503, "service is shutting down: the stream was cancelled", progress.sent > 0
            )
            raise
        except Exception as exc:
            if progress.sent == 0:
                await self._failed(msg, exc, started)  # before the first chunk: today's error contract
                return
            await self._failed_mid_stream(msg, exc, started)
            return
        finally:
            self.cancels.unregister(token)
        if msg.reply:
            try:
                await self.host.client.publish(
                    msg.reply, b"", headers=None if progress.sent else {STREAM_HEADER: cancel_subject}
                )
            except Exception as exc:  # the connection is gone: the caller's inactivity timeout ends it
                log.warning("stream.terminator_failed", endpoint=self.name, subject=msg.subject, error=repr(exc))
        self._count(started)

    async def _pump(
        self, msg: Msg, generator: AsyncGenerator[Any, None], cancel_subject: str, progress: _Progress
    ) -> None:
        """Publish every yielded value, counting them in ``progress``; the generator is closed however it ends."""
        reply = msg.reply
        nc = self.host.client
        publish = nc.publish
        sent = 0
        try:
            async for value in generator:
                if not reply:
                    continue
                kind = type(value)  # str and bytes inline: the per-chunk cost is what the bench measures
                body = value.encode() if kind is str else value if kind is bytes else encode_result(value)
                if not body:
                    raise ValueError("a streamed chunk encodes to an empty body (the empty message ends a stream)")
                if sent:
                    await publish(reply, body)
                else:
                    await publish(reply, body, headers={STREAM_HEADER: cancel_subject})
                    await asyncio.sleep(0)  # let the flusher write the first chunk now: time to first chunk
                sent += 1
                pending = nc.pending_data_size
                if pending > WRITE_AT_BYTES:
                    await (nc.flush() if pending > FLUSH_AT_BYTES else asyncio.sleep(0))
        finally:
            progress.sent = sent
            await generator.aclose()  # a failed publish or a cancel leaves it suspended: run its finally

    def _count(self, started: int, *, cancelled: bool = False) -> None:
        self.processing_time_ns += time.perf_counter_ns() - started
        if cancelled:
            self.host.counts.cancelled += 1
        else:
            self.host.counts.handled += 1

    async def _failed_mid_stream(self, msg: Msg, exc: Exception, started: int) -> None:
        code, message, _details = describe_failure(exc)
        self.num_errors += 1
        self.last_error = f"{code}: {message}"
        self.processing_time_ns += time.perf_counter_ns() - started
        self.host.counts.failed += 1
        log.error("stream.failed", endpoint=self.name, subject=msg.subject, code=code, exc_info=exc)
        await self._end_with_error(msg, code, message, True)

    async def _end_with_error(self, msg: Msg, code: int, message: str, started_streaming: bool) -> None:
        """The error message, then (once chunks went out) the terminator; never raises."""
        if not msg.reply:
            return
        body, headers = error_reply(code, message)
        try:
            await self.host.client.publish(msg.reply, body, headers=headers)
            if started_streaming:
                await self.host.client.publish(msg.reply, b"")
        except Exception as exc:  # the connection is gone; nothing more we can tell the caller
            log.warning("stream.end_failed", endpoint=self.name, subject=msg.subject, error=f"{exc!r}")
