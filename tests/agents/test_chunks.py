"""Decoding the chunks of a prompt's stream on the caller's side."""

from __future__ import annotations

import pytest

from shipkit.agents import Query, Response, Status
from shipkit.agents.chunks import decode_chunk
from shipkit.errors import SerializationError


def test_known_chunks_decode_typed() -> None:
    """Response (short and object form), status and query decode into their types."""
    nc: object = None
    assert decode_chunk(b'{"type":"response","data":"hi"}', "t", nc) == Response("hi")  # type: ignore[arg-type]
    long_form = b'{"type":"response","data":{"text":"x","attachments":[{"filename":"f","content":"YWI="}]}}'
    response = decode_chunk(long_form, "t", nc)  # type: ignore[arg-type]
    assert isinstance(response, Response) and response.attachments[0].data == b"ab"
    assert decode_chunk(b'{"type":"status","data":"busy"}', "t", nc) == Status("busy")  # type: ignore[arg-type]
    query = decode_chunk(b'{"type":"query","data":{"id":"1","reply_subject":"r","prompt":"?"}}', "t", nc)  # type: ignore[arg-type]
    assert isinstance(query, Query) and (query.id, query.reply_subject, query.prompt) == ("1", "r", "?")


def test_ack_and_unknown_types_are_skipped() -> None:
    """The protocol's ack and chunk types this caller does not know yield nothing."""
    assert decode_chunk(b'{"type":"status","data":"ack"}', "t", None) is None  # type: ignore[arg-type]
    assert decode_chunk(b'{"type":"telemetry","data":{"x":1}}', "t", None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [b"plain text", b"[1]", b'{"type":"response","data":3}', b'{"type":"query","data":{"id":"1"}}'],
)
def test_malformed_chunks_raise_naming_the_source(body: bytes) -> None:
    """A chunk that is not the protocol's shape raises SerializationError naming where it came from."""
    with pytest.raises(SerializationError, match="agent 'x'"):
        decode_chunk(body, "agent 'x'", None)  # type: ignore[arg-type]
