"""How a handler's signature decides decoding and encoding, built once per handler.

A handler takes at most one *payload* parameter and optionally a *context* parameter (annotated
:class:`~shipkit.service.context.Context`, or named ``ctx``). The payload annotation decides decoding:

- ``bytes`` -> the raw body; ``str`` -> the body as UTF-8 text;
- anything else (a pydantic model, ``dict``, ``list[int]``, a ``TypedDict``, no annotation = ``Any``)
  -> a pydantic ``TypeAdapter`` built once, validating straight from the raw JSON bytes.

The return value is encoded the same way: ``None`` -> empty body, ``bytes`` as is, ``str`` as UTF-8,
anything else as compact JSON.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, TypeAdapter

from shipkit._json import dumps
from shipkit._type_errors import unsupported_payload_type
from shipkit.errors import ConfigurationError

__all__ = ["Signature", "encode_result", "inspect_handler"]

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class Signature:
    """What the runtime needs to know to call a handler.

    Attributes:
        payload_param: name of the payload parameter, or None when the handler takes none.
        payload_type: its annotation (``Any`` when unannotated).
        context_param: name of the context parameter, or None.
        from_bytes: decode raw message bytes into the payload value (raises pydantic's
            ``ValidationError`` or ``UnicodeDecodeError`` on bad input).
        from_python: validate an already-parsed JSON value (for envelopes like ``ShipEvent``).
        context_first: True when the context parameter comes before the payload.
        streams: True for an ``async def ... yield`` handler whose yielded values are streamed
            (decided once here, so the request path never inspects the function per message).
    """

    payload_param: str | None
    payload_type: Any
    context_param: str | None
    from_bytes: Callable[[bytes], Any]
    from_python: Callable[[Any], Any]
    context_first: bool
    streams: bool = False

    def call_args(self, payload: Any, context: Any) -> tuple[Any, ...]:
        """Positional arguments for the handler in its declared order."""
        if self.payload_param is None:
            return (context,) if self.context_param else ()
        if self.context_param is None:
            return (payload,)
        return (context, payload) if self.context_first else (payload, context)


def _is_context(name: str, annotation: Any, context_type: type | None) -> bool:
    if context_type is not None and isinstance(annotation, type) and issubclass(annotation, context_type):
        return True
    return name in ("ctx", "context") and annotation in (_EMPTY, Any)


def _decoder(payload_type: Any, qualname: str) -> tuple[Callable[[bytes], Any], Callable[[Any], Any]]:
    if payload_type is bytes:
        return (lambda data: data), (lambda value: value if isinstance(value, bytes) else dumps(value))
    if payload_type is str:
        return (lambda data: data.decode()), TypeAdapter(str).validate_python
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(payload_type)
    except Exception as exc:
        raise ConfigurationError(unsupported_payload_type(qualname, payload_type, exc)) from None
    if isinstance(payload_type, type) and issubclass(payload_type, BaseModel):
        return payload_type.model_validate_json, payload_type.model_validate
    validate_json = adapter.validate_json

    def from_bytes(data: bytes) -> Any:
        return validate_json(data) if data else adapter.validate_python(None)

    return from_bytes, adapter.validate_python


def inspect_handler(
    func: Callable[..., Any], *, context_type: type | None = None, what: str = "handler", allow_stream: bool = False
) -> Signature:
    """Read a handler's signature once, at registration.

    ``allow_stream`` accepts an async generator function (a streaming handler) besides ``async def``.

    Raises:
        ConfigurationError: the function is not ``async def``, has more than one payload
            parameter, uses ``*args``/keyword-only parameters without defaults, or has annotations
            that cannot be resolved. The message names the function.
    """
    qualname = getattr(func, "__qualname__", repr(func))
    streams = allow_stream and inspect.isasyncgenfunction(func)
    if not streams and not inspect.iscoroutinefunction(func):
        kind = "an `async def` function (or an async generator)" if allow_stream else "an `async def` function"
        raise ConfigurationError(f"{what} {qualname} must be {kind}")
    try:
        hints = get_type_hints(func)
    except Exception as exc:
        raise ConfigurationError(f"{what} {qualname}: cannot resolve its type annotations: {exc}") from exc
    payload_param: str | None = None
    payload_type: Any = Any
    context_param: str | None = None
    context_first = False
    for param in inspect.signature(func).parameters.values():
        annotation = hints.get(param.name, _EMPTY)
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"{what} {qualname}: *args/**kwargs are not supported; declare the payload")
        if param.kind is param.KEYWORD_ONLY and param.default is _EMPTY:
            raise ConfigurationError(f"{what} {qualname}: keyword-only parameter {param.name!r} needs a default")
        if param.kind is param.KEYWORD_ONLY:
            continue
        if context_param is None and _is_context(param.name, annotation, context_type):
            context_param = param.name
            context_first = payload_param is None
            continue
        if payload_param is not None:
            if param.default is not _EMPTY:
                continue
            raise ConfigurationError(
                f"{what} {qualname}: takes more than one payload parameter ({payload_param!r}, {param.name!r}); "
                "take one model (or dict) and an optional `ctx: Context`"
            )
        payload_param = param.name
        payload_type = Any if annotation is _EMPTY else annotation
    from_bytes, from_python = _decoder(payload_type, qualname)
    return Signature(payload_param, payload_type, context_param, from_bytes, from_python, context_first, streams)


def encode_result(value: Any) -> bytes:
    """Encode a handler's return value as a reply body."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return dumps(value)
