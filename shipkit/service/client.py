"""Calling services: :class:`Client`, which turns error replies into :class:`~shipkit.errors.ServiceError`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, overload

from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from shipkit import _tracing
from shipkit._connectable import Connectable
from shipkit._json import loads
from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import NatsTimeoutError, SerializationError, ServiceError
from shipkit.service.codec import encode_result
from shipkit.service.context import CORRELATION_HEADER
from shipkit.service.endpoint import ERROR_CODE_HEADER, ERROR_HEADER
from shipkit.service.stream_reader import StreamReader

__all__ = ["Client"]

T = TypeVar("T")


def _seed_error(body: bytes) -> tuple[int, str] | None:
    """A noesis-ship error body is exactly ``{"error": str, "code": int}`` (no headers)."""
    if not body.startswith(b"{") or b'"error"' not in body or len(body) > 4096:
        return None
    try:
        value = loads(body)
    except SerializationError:
        return None
    if isinstance(value, dict) and set(value) == {"error", "code"} and isinstance(value["code"], int):
        return value["code"], str(value["error"])
    return None


def _decoder(response_type: Any, what: str) -> Callable[[bytes], Any]:
    """How to turn one reply body into ``response_type`` (built once per request or stream)."""
    if response_type is bytes:
        return lambda data: data
    if response_type is str:  # handlers returning str reply with plain UTF-8 text
        return lambda data: data.decode()
    if response_type is None:
        return lambda data: loads(data, what) if data else None
    adapter: TypeAdapter[Any] = TypeAdapter(response_type)

    def validate(data: bytes) -> Any:
        try:
            return adapter.validate_json(data)
        except ValidationError as exc:
            raise SerializationError(f"{what} is not a valid {response_type!r}: {exc}") from exc

    return validate


class Client(Connectable):
    """Request-reply calls to shipkit (and noesis-ship) services.

    ::

        async with Client("nats://localhost:4222") as client:
            item = await client.request("kanban.create", {"title": "x"}, response_type=Item)

    Args:
        connection: a shared manager, a config, a URL, or None (environment default).
        timeout_s: default request timeout (else the connection's ``request_timeout_s``).
    """

    def __init__(
        self, connection: ConnectionManager | NatsConfig | str | None = None, *, timeout_s: float | None = None
    ):
        self.connection, self._owned = resolve_connection(connection)
        self.timeout_s = timeout_s
        self._tracer = _tracing.tracer()  # decided once: requests are traced or not

    async def connect(self) -> Client:
        """Connect the underlying manager if needed."""
        await self.connection.connect()
        return self

    async def close(self) -> None:
        """Close the connection if this client made it."""
        if self._owned:
            await self.connection.close()

    @overload
    async def request(
        self,
        subject: str,
        payload: Any = ...,
        *,
        response_type: type[T],
        timeout_s: float | None = ...,
        correlation_id: str | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> T: ...

    @overload
    async def request(
        self,
        subject: str,
        payload: Any = ...,
        *,
        response_type: None = ...,
        timeout_s: float | None = ...,
        correlation_id: str | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> Any: ...

    async def request(
        self,
        subject: str,
        payload: Any = None,
        *,
        response_type: Any = None,
        timeout_s: float | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request and decode the reply.

        Args:
            subject: e.g. ``"kanban.create"``.
            payload: a model, dict/list, str or bytes (encoded like handler replies).
            response_type: validate the reply into this type; ``bytes`` for the raw body, ``str``
                for it as text;
                None for the parsed JSON (or None for an empty body).
            timeout_s: overrides the default timeout.
            correlation_id: sent as ``Shipkit-Correlation-Id``.

        Raises:
            ServiceError: the service answered with an error (code and message from the
                ``Nats-Service-Error`` headers or the seed's ``{"error","code"}`` body).
            NatsTimeoutError: nobody answered in time, or nobody listens on ``subject``.
        """
        sent_headers = dict(headers or {})
        if correlation_id:
            sent_headers[CORRELATION_HEADER] = correlation_id
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        body = encode_result(payload)

        async def call(headers: dict[str, str] | None) -> Msg:
            try:
                msg: Msg = await self.connection.request(subject, body, timeout_s=timeout, headers=headers)
            except NatsTimeoutError as exc:
                raise NatsTimeoutError(f"request to {subject!r}: {exc}") from exc
            self._raise_for_error(subject, msg.data, msg.headers or {})
            return msg

        if self._tracer is None:
            msg = await call(sent_headers or None)
        else:  # an error reply fails the request's span too
            msg = await _tracing.send(
                self._tracer, subject, sent_headers, call, operation_name="request", kind="client"
            )
        return _decoder(response_type, f"reply from {subject}")(msg.data)

    @overload
    def stream(
        self,
        subject: str,
        payload: Any = ...,
        *,
        response_type: type[T],
        inactivity_timeout_s: float | None = ...,
        correlation_id: str | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> AsyncIterator[T]: ...

    @overload
    def stream(
        self,
        subject: str,
        payload: Any = ...,
        *,
        response_type: None = ...,
        inactivity_timeout_s: float | None = ...,
        correlation_id: str | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> AsyncIterator[Any]: ...

    async def stream(
        self,
        subject: str,
        payload: Any = None,
        *,
        response_type: Any = None,
        inactivity_timeout_s: float | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        """Send a request and iterate over its streamed reply, chunk by chunk.

        A handler written as an async generator streams what it yields; an ordinary handler's
        single reply is a stream of one chunk. Leaving the loop early (``break``, a cancelled
        task, a timeout) tells the handler, whose generator is then closed; wrap the call in
        ``contextlib.aclosing`` to have that happen at once rather than when the iterator is
        collected.

        Args:
            subject: e.g. ``"assistant.tokens"``.
            payload: encoded like :meth:`request`'s.
            response_type: decode each chunk into this type (as :meth:`request` does).
            inactivity_timeout_s: the longest silence between two chunks (default: the
                client's ``timeout_s``, else 30 s).
            correlation_id: sent as ``Shipkit-Correlation-Id``.

        Raises:
            ServiceError: the service answered with an error (before or during the stream).
            NatsTimeoutError: nothing arrived within the inactivity timeout, or nobody listens.
            SerializationError: a chunk does not decode into ``response_type``.
        """
        sent_headers = dict(headers or {})
        if correlation_id:
            sent_headers[CORRELATION_HEADER] = correlation_id
        timeout = inactivity_timeout_s if inactivity_timeout_s is not None else (self.timeout_s or 30.0)
        reader = StreamReader(
            self.connection.client,
            subject,
            encode_result(payload),
            headers=sent_headers or None,
            inactivity_timeout_s=timeout,
        )
        decode = _decoder(response_type, f"chunk from {subject}")
        await reader.start()
        try:
            while (msg := await reader.next()) is not None:
                self._raise_for_error(subject, msg.data, msg.headers or {})
                yield decode(msg.data)
        finally:
            await reader.aclose()

    @staticmethod
    def _raise_for_error(subject: str, body: bytes, headers: dict[str, str]) -> None:
        code_text = headers.get(ERROR_CODE_HEADER)
        if code_text is not None:
            try:
                parsed = loads(body) if body else None
            except SerializationError:
                parsed = None  # headers carry code and message; a non-JSON body only lacks details
            details = parsed.get("details") if isinstance(parsed, dict) else None
            code = int(code_text) if code_text.isdigit() else 500
            raise ServiceError(code, headers.get(ERROR_HEADER, "error"), details=details)
        seed = _seed_error(body)
        if seed is not None:
            raise ServiceError(seed[0], seed[1])
