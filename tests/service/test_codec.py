"""Signature inspection and reply encoding (pure logic)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from shipkit.errors import ConfigurationError
from shipkit.service.codec import encode_result, inspect_handler
from shipkit.service.context import Context


class Item(BaseModel):
    title: str


class Point(TypedDict):
    x: int


async def takes_model(item: Item) -> Item:
    return item


async def takes_bytes(data: bytes) -> bytes:
    return data


async def takes_str(text: str) -> str:
    return text


async def takes_any(value):  # type: ignore[no-untyped-def]
    return value


async def takes_typed_dict(point: Point) -> int:
    return point["x"]


async def takes_nothing() -> None:
    return None


def test_model_payload_validates_from_raw_json() -> None:
    """A pydantic-model payload is validated straight from bytes."""
    sig = inspect_handler(takes_model, context_type=Context)
    assert sig.from_bytes(b'{"title":"a"}') == Item(title="a")
    with pytest.raises(ValidationError):
        sig.from_bytes(b'{"nope":1}')


def test_bytes_str_any_and_typed_dict_payloads() -> None:
    """bytes passes through, str decodes UTF-8, no annotation parses JSON, TypedDict validates."""
    assert inspect_handler(takes_bytes).from_bytes(b"\x00raw") == b"\x00raw"
    assert inspect_handler(takes_str).from_bytes("héllo".encode()) == "héllo"
    assert inspect_handler(takes_any).from_bytes(b'{"a":[1]}') == {"a": [1]}
    assert inspect_handler(takes_any).from_bytes(b"") is None
    assert inspect_handler(takes_typed_dict).from_bytes(b'{"x":"3"}') == {"x": 3}
    with pytest.raises(ValidationError):
        inspect_handler(takes_typed_dict).from_bytes(b'{"x":"three"}')


def test_no_payload_parameter() -> None:
    """A handler without parameters is called with none."""
    sig = inspect_handler(takes_nothing)
    assert sig.payload_param is None
    assert sig.call_args(None, None) == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b""),
        (b"raw", b"raw"),
        ("text", b"text"),
        (Item(title="t"), b'{"title":"t"}'),
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}'),
        ([1, 2], b"[1,2]"),
    ],
)
def test_encode_result(value: Any, expected: bytes) -> None:
    """Return values encode as documented: None empty, bytes as is, str UTF-8, else compact JSON."""
    assert encode_result(value) == expected


def test_an_unsupported_payload_annotation_is_one_clear_line() -> None:
    """`q: asyncio.Queue` is refused at registration with one line naming the type, without pydantic's advice."""

    async def takes_queue(q: asyncio.Queue) -> None:  # type: ignore[type-arg]
        """Cannot be a payload."""

    with pytest.raises(ConfigurationError) as info:
        inspect_handler(takes_queue)
    message = str(info.value)
    assert "\n" not in message
    assert "asyncio.queues.Queue" in message and "arbitrary_types_allowed" not in message
