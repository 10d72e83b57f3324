"""Golden vectors for the wire models against the wire contract §1 and §3, both directions.

Writing: the JSON shipkit produces has exactly the contract's field names in the contract's
order, compact separators and the contract's types. Reading: JSON hand-written the way a Rust
noesis-ship agent writes it (any field order, unknown fields, ``Z`` timestamps with nanoseconds)
parses into the shipkit models.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipkit import _json
from shipkit.errors import SerializationError
from shipkit.models import (
    BeingState,
    BeingStatus,
    ChannelMessage,
    ErrorResponse,
    Event,
    ObjectMeta,
    ShipEvent,
    new_correlation_id,
    parse_timestamp,
    utc_now_iso,
)

SHIP_EVENT_FIELDS = ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
EVENT_FIELDS = ["event_type", "source", "payload", "timestamp", "correlation_id"]
CHANNEL_FIELDS = ["sender", "content", "timestamp", "channel", "message_id", "metadata"]
BEING_FIELDS = [
    "being_id",
    "state",
    "current_task",
    "last_heartbeat",
    "uptime_seconds",
    "memory_mb",
    "capabilities",
    "metadata",
]
OBJECT_META_FIELDS = ["name", "bucket", "size", "sha256", "created", "description"]
ERROR_FIELDS = ["error", "code"]

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00$")
CORRELATION_ID = re.compile(r"^[0-9a-f]{8}$")
RUST_TS = "2025-03-14T09:26:53.589793238Z"  # chrono's to_rfc3339_opts(Nanos, true)


def keys(raw: bytes) -> list[str]:
    """The top-level keys of a JSON object in the order they were written."""
    return list(json.loads(raw))


JSON_STRING = re.compile(rb'"(?:\\.|[^"\\])*"')


def assert_compact(raw: bytes) -> None:
    """Valid JSON with no whitespace outside string literals (``separators=(",", ":")``)."""
    json.loads(raw)
    assert not re.search(rb"\s", JSON_STRING.sub(b'""', raw)), raw


# -- writing: field order, compactness, types ---------------------------------------------------------


def test_assert_compact_detects_spaces() -> None:
    """The compactness check used below rejects spaced JSON but not spaces inside strings."""
    assert_compact(b'{"a":"x, y: z","b":[1,2]}')
    with pytest.raises(AssertionError):
        assert_compact(b'{"a": 1}')
    with pytest.raises(AssertionError):
        assert_compact(b'{"a":"\\\\", "b":1}')  # a space after a string ending in an escaped backslash


def test_ship_event_fields_order_and_types() -> None:
    """A ShipEvent is written with the six contract fields in order, version 1.0 and a non-null correlation id."""
    raw = ShipEvent.new("item.created", {"id": 42}, source="svc").to_json()
    assert keys(raw) == SHIP_EVENT_FIELDS
    assert_compact(raw)
    body = json.loads(raw)
    assert body["event_type"] == "item.created"
    assert RFC3339_UTC.match(body["timestamp"])
    assert body["source"] == "svc"
    assert body["payload"] == {"id": 42}
    assert CORRELATION_ID.match(body["correlation_id"])
    assert body["version"] == "1.0"


def test_ship_event_never_writes_null_correlation_id() -> None:
    """A ShipEvent built without a correlation id (or with None) still writes an 8-hex one."""
    for event in (ShipEvent(event_type="a"), ShipEvent.new("a", correlation_id=None)):
        assert CORRELATION_ID.match(json.loads(event.to_json())["correlation_id"])


def test_ship_event_keeps_given_correlation_id_and_null_payload() -> None:
    """A given correlation id is written as is, and a missing payload is written as JSON null."""
    body = json.loads(ShipEvent.new("a.b", correlation_id="deadbeef").to_json())
    assert body["correlation_id"] == "deadbeef"
    assert body["payload"] is None
    assert body["source"] == ""


def test_event_fields_order_and_null_correlation_id() -> None:
    """An Event is written with the five contract fields in order and correlation_id null when unset."""
    raw = Event(event_type="heartbeat", source="agent-1", payload={"ok": True}).to_json()
    assert keys(raw) == EVENT_FIELDS
    assert_compact(raw)
    body = json.loads(raw)
    assert body["correlation_id"] is None
    assert RFC3339_UTC.match(body["timestamp"])


def test_event_writes_set_correlation_id() -> None:
    """An Event with a correlation id writes it as a string."""
    body = json.loads(Event(event_type="x", correlation_id="0a1b2c3d").to_json())
    assert body["correlation_id"] == "0a1b2c3d"


def test_channel_message_without_metadata_omits_the_key() -> None:
    """A ChannelMessage without metadata has no `metadata` key; the other five are in contract order."""
    raw = ChannelMessage.new("general", "alice", "hello").to_json()
    assert keys(raw) == CHANNEL_FIELDS[:-1]
    assert_compact(raw)


def test_channel_message_with_metadata_types() -> None:
    """A ChannelMessage writes a float timestamp, `{channel}-{ns}` id and metadata last."""
    before = time.time_ns()
    raw = ChannelMessage.new("dev-ops", "alice", "hello", {"priority": 1}).to_json()
    after = time.time_ns()
    assert keys(raw) == CHANNEL_FIELDS
    body = json.loads(raw)
    assert isinstance(body["timestamp"], float)
    channel, _, nanos = body["message_id"].rpartition("-")
    assert channel == "dev-ops"
    assert nanos.isdigit()
    assert before <= int(nanos) <= after
    assert body["timestamp"] == pytest.approx(int(nanos) / 1e9, abs=1e-6)
    assert body["metadata"] == {"priority": 1}


def test_channel_message_integer_timestamp_is_written_as_float() -> None:
    """A whole-second timestamp is still written as a JSON float, the type the contract gives it."""
    body = json.loads(ChannelMessage(sender="a", content="b", channel="c", timestamp=1700000000).to_json())
    assert isinstance(body["timestamp"], float)


def test_being_status_fields_order_and_types() -> None:
    """BeingStatus is written in contract order with an integer uptime and the state as a lowercase string."""
    status = BeingStatus(
        being_id="b1",
        state=BeingState.WORKING,
        current_task="t",
        uptime_seconds=12,
        memory_mb=1.5,
        capabilities=["code"],
    )
    raw = status.to_json()
    assert keys(raw) == BEING_FIELDS
    assert_compact(raw)
    body = json.loads(raw)
    assert body["state"] == "working"
    assert type(body["uptime_seconds"]) is int
    assert isinstance(body["memory_mb"], float)
    assert RFC3339_UTC.match(body["last_heartbeat"])
    assert body["metadata"] is None


def test_being_status_float_uptime_becomes_integer() -> None:
    """A float uptime (from a sloppy writer) is stored and re-written as an integer."""
    body = json.loads(BeingStatus(being_id="b", uptime_seconds=3.9).to_json())  # type: ignore[arg-type]
    assert body["uptime_seconds"] == 3
    assert type(body["uptime_seconds"]) is int


def test_object_meta_and_error_response_fields_order() -> None:
    """ObjectMeta and ErrorResponse are written with the contract's fields in order."""
    meta = ObjectMeta(name="n", bucket="artifacts", size=3, sha256="ab" * 32, created=utc_now_iso(), description=None)
    assert keys(meta.to_json()) == OBJECT_META_FIELDS
    raw = ErrorResponse(error="UNKNOWN_COMMAND: nope", code=404).to_json()
    assert raw == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'
    assert keys(raw) == ERROR_FIELDS


def test_helpers_produce_contract_formats() -> None:
    """utc_now_iso is RFC 3339 UTC with +00:00 and new_correlation_id is 8 lowercase hex characters."""
    assert RFC3339_UTC.match(utc_now_iso())
    ids = {new_correlation_id() for _ in range(50)}
    assert all(CORRELATION_ID.match(i) for i in ids)
    assert len(ids) > 1


def test_json_dumps_is_compact_utf8() -> None:
    """_json.dumps writes compact UTF-8 (no spaces, no ASCII escapes), like serde_json."""
    raw = _json.dumps({"a": [1, 2], "b": "é"})
    assert raw == '{"a":[1,2],"b":"é"}'.encode()


def test_json_loads_failure_names_the_source() -> None:
    """_json.loads of invalid bytes raises SerializationError that says where the bytes came from."""
    with pytest.raises(SerializationError, match="kv get ship_config/x"):
        _json.loads(b"{nope", "kv get ship_config/x")


def test_json_dumps_unencodable_value() -> None:
    """_json.dumps of a value with no JSON form raises SerializationError naming its type."""
    with pytest.raises(SerializationError, match="object"):
        _json.dumps(object())


def test_unencodable_payload_raises_serialization_error() -> None:
    """A payload or metadata with no JSON form raises SerializationError naming the model, not a pydantic error."""
    with pytest.raises(SerializationError, match="ShipEvent"):
        ShipEvent.new("a", payload={"x": object()}).to_json()
    with pytest.raises(SerializationError, match="ChannelMessage"):
        ChannelMessage.new("c", "s", "text", metadata=object()).to_json()


# -- reading: what a Rust noesis-ship agent writes ----------------------------------------------------


def test_reads_rust_ship_event_with_nanosecond_z_timestamp() -> None:
    """A ShipEvent written by serde (contract order, `Z` and 9 fractional digits) parses and keeps its bytes."""
    raw = (
        b'{"event_type":"item.created","timestamp":"' + RUST_TS.encode() + b'","source":"rust-agent",'
        b'"payload":{"id":42,"tags":["a"]},"correlation_id":"0a1b2c3d","version":"1.0"}'
    )
    event = ShipEvent.from_json(raw)
    assert event.event_type == "item.created"
    assert event.timestamp == RUST_TS  # kept as written: a reader never rewrites a peer's bytes
    assert event.source == "rust-agent"
    assert event.payload == {"id": 42, "tags": ["a"]}
    assert event.correlation_id == "0a1b2c3d"
    assert event.version == "1.0"


def test_reads_ship_event_in_any_order_with_unknown_fields() -> None:
    """A ShipEvent with shuffled fields and unknown extras parses; the extras are dropped on re-write."""
    raw = json.dumps(
        {
            "version": "1.0",
            "x_trace": {"span": 1},
            "payload": None,
            "correlation_id": "ffffffff",
            "source": "",
            "timestamp": "2025-03-14T09:26:53Z",
            "event_type": "deploy.started",
        }
    )
    event = ShipEvent.from_json(raw)
    assert event.event_type == "deploy.started"
    assert keys(event.to_json()) == SHIP_EVENT_FIELDS


def test_reads_rust_event_with_null_or_missing_correlation_id() -> None:
    """An Event with correlation_id null, or without the key, parses with correlation_id None."""
    base = '"event_type":"heartbeat","source":"agent-1","payload":{"ok":true},"timestamp":"' + RUST_TS + '"'
    assert Event.from_json("{" + base + ',"correlation_id":null}').correlation_id is None
    assert Event.from_json("{" + base + "}").correlation_id is None
    assert Event.from_json("{" + base + ',"correlation_id":"0a1b2c3d"}').correlation_id == "0a1b2c3d"


def test_reads_rust_channel_message_variants() -> None:
    """A ChannelMessage from Rust parses with metadata null, absent or set, and an integer-valued f64 timestamp."""
    head = '{"sender":"rust","content":"hi","timestamp":1741944413.589793,"channel":"general",'
    with_null = ChannelMessage.from_json(head + '"message_id":"general-1741944413589793238","metadata":null}')
    assert with_null.metadata is None
    assert with_null.timestamp == pytest.approx(1741944413.589793)
    assert with_null.message_id == "general-1741944413589793238"
    absent = ChannelMessage.from_json(head + '"message_id":"general-1"}')
    assert absent.metadata is None
    assert "metadata" not in keys(absent.to_json())
    whole = ChannelMessage.from_json(
        '{"metadata":{"k":[1]},"message_id":"c-1","channel":"c","timestamp":1741944413,"content":"x","sender":"s"}'
    )
    assert whole.metadata == {"k": [1]}
    assert whole.timestamp == 1741944413.0


def test_reads_rust_being_status() -> None:
    """A BeingStatus from Rust (Z timestamp, null memory, extra fields) parses into typed fields."""
    raw = (
        '{"being_id":"b-7","state":"blocked","current_task":null,"last_heartbeat":"' + RUST_TS + '",'
        '"uptime_seconds":3600,"memory_mb":null,"capabilities":["rust","nats"],"metadata":{"host":"dgx"},"extra":1}'
    )
    status = BeingStatus.from_json(raw)
    assert status.state is BeingState.BLOCKED
    assert status.uptime_seconds == 3600
    assert status.memory_mb is None
    assert status.capabilities == ["rust", "nats"]
    assert status.metadata == {"host": "dgx"}
    assert status.last_heartbeat == RUST_TS


def test_reads_error_response_and_object_meta() -> None:
    """ErrorResponse and ObjectMeta parse from hand-written JSON in any order."""
    assert ErrorResponse.from_json(b'{"code":404,"error":"UNKNOWN_COMMAND: nope"}') == ErrorResponse(
        error="UNKNOWN_COMMAND: nope", code=404
    )
    meta = ObjectMeta.from_json(
        b'{"description":"type=log","created":"2025-03-14T09:26:53Z","sha256":"00","size":0,"bucket":"b","name":"n"}'
    )
    assert meta.description == "type=log"
    assert meta.size == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RUST_TS, datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)),
        ("2025-03-14T09:26:53Z", datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)),
        ("2025-03-14T09:26:53.5z", datetime(2025, 3, 14, 9, 26, 53, 500000, tzinfo=UTC)),
        ("2025-03-14T09:26:53.123456+00:00", datetime(2025, 3, 14, 9, 26, 53, 123456, tzinfo=UTC)),
        (
            "2025-03-14T11:26:53.123456789+02:00",
            datetime(2025, 3, 14, 11, 26, 53, 123456, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_parse_timestamp_accepts_rfc3339_variants(text: str, expected: datetime) -> None:
    """parse_timestamp reads `Z`, offsets and up to 9 fractional digits (cut to microseconds)."""
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["2025-03-14T09:26:53", "yesterday", "", "2025-13-01T00:00:00Z"])
def test_parse_timestamp_rejects_non_rfc3339(text: str) -> None:
    """parse_timestamp refuses text without a UTC offset or that is no timestamp at all."""
    with pytest.raises(ValueError, match=r"."):
        parse_timestamp(text)


# -- malformed input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (ShipEvent, b'{"event_type":1,"timestamp":"2025-03-14T09:26:53Z"}', "event_type"),
        (ShipEvent, b'{"event_type":"a","timestamp":"not a time"}', "timestamp"),
        (ShipEvent, b'{"timestamp":"2025-03-14T09:26:53Z"}', "event_type"),
        (Event, b'{"event_type":"a","correlation_id":5}', "correlation_id"),
        (ChannelMessage, b'{"sender":"s","content":"c","channel":"x","timestamp":"noon"}', "timestamp"),
        (ChannelMessage, b'{"sender":"s","timestamp":1.0,"channel":"x"}', "content"),
        (BeingStatus, b'{"being_id":"b","state":"sleeping"}', "state"),
        (BeingStatus, b'{"being_id":"b","uptime_seconds":"long"}', "uptime_seconds"),
        (BeingStatus, b'{"being_id":"b","capabilities":["a",2]}', "capabilities.1"),
        (ErrorResponse, b'{"error":"x","code":"four"}', "code"),
        (ObjectMeta, b'{"name":"n","bucket":"b","size":-1.5,"sha256":"","created":""}', "size"),
    ],
)
def test_malformed_json_names_model_and_field(model: type[Any], raw: bytes, field: str) -> None:
    """Wrong types or missing fields raise SerializationError naming the model and the offending field."""
    with pytest.raises(SerializationError) as info:
        model.from_json(raw)
    message = str(info.value)
    assert model.__name__ in message
    assert field in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[1,2]", b"null", b"\xff\xfe"])
def test_undecodable_bytes_raise_serialization_error(raw: bytes) -> None:
    """Bytes that are not a JSON object raise SerializationError naming the model, never a pydantic error."""
    with pytest.raises(SerializationError, match="ShipEvent"):
        ShipEvent.from_json(raw)


# -- round trip -----------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
words = st.text(min_size=1, max_size=20)
utc_timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat())
correlation_ids = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)
finite_floats = st.floats(min_value=0, max_value=4e9, allow_nan=False)

ship_events = st.builds(
    ShipEvent,
    event_type=words,
    timestamp=utc_timestamps,
    source=st.text(max_size=10),
    payload=json_values,
    correlation_id=correlation_ids,
)
events = st.builds(
    Event,
    event_type=words,
    source=st.text(max_size=10),
    payload=json_values,
    timestamp=utc_timestamps,
    correlation_id=st.none() | correlation_ids,
)
channel_messages = st.builds(
    ChannelMessage,
    sender=words,
    content=st.text(max_size=40),
    timestamp=finite_floats,
    channel=words,
    message_id=words,
    metadata=json_values,
)
being_statuses = st.builds(
    BeingStatus,
    being_id=words,
    state=st.sampled_from(BeingState),
    current_task=st.none() | words,
    last_heartbeat=utc_timestamps,
    uptime_seconds=st.integers(min_value=0, max_value=2**53),
    memory_mb=st.none() | finite_floats,
    capabilities=st.lists(words, max_size=3),
    metadata=json_values,
)
error_responses = st.builds(ErrorResponse, error=st.text(max_size=30), code=st.integers(100, 599))


@given(st.one_of(ship_events, events, channel_messages, being_statuses, error_responses))
def test_round_trip_model_json_model(model: Any) -> None:
    """Any model written with to_json reads back equal with from_json, in compact contract order."""
    raw = model.to_json()
    assert type(model).from_json(raw) == model
    assert_compact(raw)
    expected = {
        ShipEvent: SHIP_EVENT_FIELDS,
        Event: EVENT_FIELDS,
        ChannelMessage: CHANNEL_FIELDS,
        BeingStatus: BEING_FIELDS,
        ErrorResponse: ERROR_FIELDS,
    }[type(model)]
    if isinstance(model, ChannelMessage) and model.metadata is None:
        expected = expected[:-1]
    assert keys(raw) == expected
