"""Compact JSON encoding and decoding shared by every primitive (JSON only: never pickle)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, TypeAdapter

from shipkit.errors import SerializationError

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON for any JSON-able value (pydantic models, dataclasses, datetimes included).

    Raises:
        SerializationError: the value cannot be represented as JSON.
    """
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    try:
        return _ANY.dump_json(value)
    except Exception as exc:  # pydantic raises PydanticSerializationError for unknown types
        raise SerializationError(f"cannot encode {type(value).__name__} as JSON: {exc}") from exc


def loads(data: bytes | str, where: str = "") -> Any:
    """Decode JSON; raise :class:`SerializationError` that says where the bytes came from."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        prefix = f"{where}: " if where else ""
        preview = data[:80] if isinstance(data, bytes | str) else data
        raise SerializationError(f"{prefix}invalid JSON ({exc}); got {preview!r}") from exc
