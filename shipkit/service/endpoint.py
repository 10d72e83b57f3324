"""The request/message hot path: decode, call, encode, reply, count.

Per-handler work (signature, validator, subject) is done once at registration; per message we
run only what this message needs. A handler is started *eagerly* in the subscription's own
loop: if it finishes without suspending (the common case for CPU-only handlers) the reply goes
out with no task created; if it suspends, the rest of it continues in a task, bounded by the
handler's ``max_concurrency`` (the subscription waits for a free slot: backpressure, not loss).
This is what Python 3.12's eager tasks do, written out so it runs the same on 3.11.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from shipkit._json import dumps
from shipkit.errors import PayloadTooLargeError, ServiceError, as_shipkit_error
from shipkit.logging import get_logger
from shipkit.models import ErrorResponse
from shipkit.service.codec import Signature, encode_result
from shipkit.service.context import Context
from shipkit.service.host import Host

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "Endpoint",
    "FinishedHook",
    "describe_failure",
    "error_reply",
    "validation_details",
]

log = get_logger("shipkit.dispatch")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

FinishedHook = Callable[["Endpoint", Msg, int, int], None]
"""``(endpoint, msg, elapsed_ns, code) -> None``: a message was answered (``code`` 0 = success).

Set by the runtime only when metrics or tracing are on; ``None`` costs one attribute check per message."""


class _Resume:
    """Awaitable continuing a coroutine that was already stepped once and yielded ``first``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and thrown errors go to the handler
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Field errors as JSON-able dicts: ``[{"loc": [...], "msg": ..., "type": ...}]``."""
    return [
        {"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def error_reply(code: int, message: str, details: Any = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an error reply, understood by NATS micro tools and noesis-ship clients."""
    one_line = " ".join(message.split())[:1000] or "error"
    body = ErrorResponse(error=one_line, code=code).model_dump()
    if details is not None:
        body["details"] = details
    return dumps(body), {ERROR_HEADER: one_line, ERROR_CODE_HEADER: str(code)}


def describe_failure(exc: BaseException) -> tuple[int, str, Any]:
    """(code, one-line message, details) for an exception raised while handling a message."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message, exc.details
    if isinstance(exc, ValidationError):
        details = validation_details(exc)
        fields = "; ".join(f"{'.'.join(d['loc']) or '<body>'}: {d['msg']}" for d in details[:3])
        more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
        return 400, f"invalid payload: {fields}{more}", details
    if isinstance(exc, PayloadTooLargeError):
        return 413, str(exc), None
    text = str(exc).strip().splitlines()
    return 500, f"{type(exc).__name__}: {text[0] if text else 'internal error'}", None


class Endpoint:
    """One registered function and its counters; ``handle`` is the subscription callback.

    Args:
        host: the running service (replies, counts, in-flight tracking, the handler's context).
        name: endpoint name for logs and discovery.
        subject: the subject it was registered on.
        func: the handler.
        signature: how to call it.
        max_concurrency: suspended handlers allowed at once.
        after_success: optional async hook ``(msg, context, result) -> None`` run before the reply
            (mutation events); forces the handler's completion onto a task.
        pass_subject: call ``func(subject, payload)`` (the seed's default-handler shape).
        metadata: endpoint metadata shown by discovery.
        on_finished: optional :data:`FinishedHook` called once per message when it is answered
            (success, error or cancellation), where metrics and tracing observe it.
    """

    __slots__ = (
        "_slot_free",
        "after_success",
        "func",
        "host",
        "in_flight",
        "last_error",
        "max_concurrency",
        "metadata",
        "name",
        "num_errors",
        "num_requests",
        "on_finished",
        "pass_subject",
        "processing_time_ns",
        "queue_group",
        "signature",
        "subject",
    )

    def __init__(
        self,
        host: Host,
        name: str,
        subject: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        signature: Signature,
        *,
        max_concurrency: int,
        queue_group: str | None = None,
        after_success: Callable[[Msg, Any, Any], Awaitable[None]] | None = None,
        pass_subject: bool = False,
        metadata: dict[str, str] | None = None,
        on_finished: FinishedHook | None = None,
    ) -> None:
        self.host = host
        self.on_finished = on_finished
        self.metadata = dict(metadata or {})
        self.pass_subject = pass_subject
        self.name = name
        self.subject = subject
        self.func = func
        self.signature = signature
        self.max_concurrency = max_concurrency
        self.queue_group = queue_group
        self.after_success = after_success
        self.in_flight = 0
        self._slot_free: asyncio.Event | None = None
        self.num_requests = 0
        self.num_errors = 0
        self.last_error = ""
        self.processing_time_ns = 0

    async def handle(self, msg: Msg) -> None:
        """Decode, run the handler, reply (when the message has a reply subject)."""
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
        if self.pass_subject:
            coro = self.func(msg.subject, payload)
        else:
            coro = self.func(*signature.call_args(payload, context))
        try:
            pending = coro.send(None)
        except StopIteration as stop:
            if self.after_success is None:
                await self._succeeded(msg, stop.value, started)
                return
            self._spawn(self._finish(msg, context, stop.value, started))
            return
        except Exception as exc:
            await self._failed(msg, exc, started)
            return
        self._spawn(self._continue(msg, context, _Resume(coro, pending), started))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.in_flight += 1
        self.host.track(asyncio.get_running_loop().create_task(coro), self._release)

    def _release(self, _task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        if self._slot_free is not None:
            self._slot_free.set()

    async def _wait_for_slot(self) -> None:
        if self._slot_free is None:
            self._slot_free = asyncio.Event()
        while self.in_flight >= self.max_concurrency:
            self._slot_free.clear()
            await self._slot_free.wait()

    async def _continue(self, msg: Msg, context: Any, resume: _Resume, started: int) -> None:
        try:
            result = await resume
        except asyncio.CancelledError:
            await self._cancelled(msg)
            raise
        except Exception as exc:
            await self._failed(msg, exc, started)
            return
        await self._finish(msg, context, result, started)

    async def _finish(self, msg: Msg, context: Any, result: Any, started: int) -> None:
        if self.after_success is not None:
            try:
                await self.after_success(msg, context, result)
            except asyncio.CancelledError:
                await self._cancelled(msg, "the request was handled but its event was not published")
                raise
            except Exception as exc:
                await self._failed(msg, exc, started, note="handled, but its event could not be published")
                return
        await self._succeeded(msg, result, started)

    async def _cancelled(self, msg: Msg, what: str = "the request was cancelled") -> None:
        """Cancelled at shutdown: the caller hears 503 at once instead of waiting for its timeout."""
        self.host.counts.cancelled += 1
        await self._reply_error(msg, 503, f"service is shutting down: {what}", None)
        if self.on_finished is not None:
            self.on_finished(self, msg, 0, 503)

    async def _succeeded(self, msg: Msg, result: Any, started: int) -> None:
        reply = msg.reply
        if reply:
            # No context manager on this path: entering translate_nats_errors (and formatting its
            # label) for every reply cost ~1.2 µs, ~7 % of a responder's CPU per request at 64 in
            # flight (docs/performance.md); errors are translated the same way, only when raised.
            try:
                await self.host.client.publish(reply, encode_result(result))
            except Exception as exc:  # encoding or an oversized reply: tell the caller what happened
                failure = as_shipkit_error(exc, f"reply to {self.subject}")
                await self._failed(msg, failure, started, note="the handler succeeded but its reply could not be sent")
                return
        elapsed_ns = time.perf_counter_ns() - started
        self.processing_time_ns += elapsed_ns
        self.host.counts.handled += 1
        if self.on_finished is not None:
            self.on_finished(self, msg, elapsed_ns, 0)

    async def _failed(
        self, msg: Msg, exc: BaseException, started: int, *, decoding: bool = False, note: str = ""
    ) -> None:
        code, message, details = describe_failure(exc)
        if decoding and code == 500:
            code, message = 400, f"undecodable payload: {message}"
        if note:
            message = f"{note}: {message}"
        self.num_errors += 1
        self.last_error = f"{code}: {message}"
        elapsed_ns = time.perf_counter_ns() - started
        self.processing_time_ns += elapsed_ns
        self.host.counts.failed += 1
        if code >= 500 and not isinstance(exc, ServiceError):
            log.error("message.failed", endpoint=self.name, subject=msg.subject, code=code, exc_info=exc)
        else:
            log.info("message.rejected", endpoint=self.name, subject=msg.subject, code=code, error=message)
        await self._reply_error(msg, code, message, details)
        if self.on_finished is not None:
            self.on_finished(self, msg, elapsed_ns, code)

    async def _reply_error(self, msg: Msg, code: int, message: str, details: Any) -> None:
        if not msg.reply:
            return
        body, headers = error_reply(code, message, details)
        try:
            await self.host.client.publish(msg.reply, body, headers=headers)
        except Exception as exc:  # the connection is gone; nothing more we can tell the caller
            log.warning("reply.failed", endpoint=self.name, subject=msg.subject, error=f"{type(exc).__name__}: {exc}")

    @property
    def average_processing_time_ns(self) -> int:
        """Mean handling time in nanoseconds."""
        return self.processing_time_ns // self.num_requests if self.num_requests else 0
