"""Wire models shared with noesis-ship agents (wire contract §1 and §3).

Every model writes compact JSON with its fields in the contract's order (``to_json``) and
reads any field order, ignoring unknown fields (``from_json``). Timestamps are written as
RFC 3339 UTC with ``+00:00`` and kept as strings, so a reader never rewrites a peer's bytes;
``Z`` and nanosecond fractions from Rust are accepted.
"""

from __future__ import annotations

import enum
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticSerializationError

from shipkit.errors import SerializationError

__all__ = [
    "BeingState",
    "BeingStatus",
    "ChannelMessage",
    "ErrorResponse",
    "Event",
    "ObjectMeta",
    "ShipEvent",
    "Timestamp",
    "WireModel",
    "new_correlation_id",
    "parse_timestamp",
    "utc_now_iso",
]


def utc_now_iso() -> str:
    """Now as RFC 3339 UTC with ``+00:00`` (``datetime.now(timezone.utc).isoformat()``)."""
    return datetime.now(UTC).isoformat()


def new_correlation_id() -> str:
    """The first 8 hex characters of a fresh UUID4."""
    return uuid.uuid4().hex[:8]


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or offset; fractions beyond microseconds are cut)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:  # Rust writes up to 9 fractional digits; Python parses at most 6
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return parsed


def _check_timestamp(value: str) -> str:
    try:
        parse_timestamp(value)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from exc
    return value


Timestamp = Annotated[str, AfterValidator(_check_timestamp)]
"""An RFC 3339 timestamp kept as the string it was written as."""


class WireModel(BaseModel):
    """Base of the wire models: ignore unknown fields, compact JSON in declaration order."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_json(self) -> bytes:
        """Compact JSON bytes, fields in contract order."""
        return self._dump_json()

    def _dump_json(self, exclude: set[str] | None = None) -> bytes:
        """Compact JSON; raise :class:`SerializationError` when a value is not JSON-able."""
        try:
            return self.model_dump_json(exclude=exclude).encode()
        except PydanticSerializationError as exc:
            raise SerializationError(f"cannot encode {type(self).__name__} as JSON: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse JSON bytes; raise :class:`SerializationError` naming the model and the fields."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise SerializationError(f"invalid {cls.__name__} JSON: {_summarise(exc)}") from exc


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class ShipEvent(WireModel):
    """A durable event on the event bus (JetStream), e.g. ``item.created``.

    ``correlation_id`` is never null on the wire (noesis-ship requires all six fields).
    """

    event_type: str
    timestamp: Timestamp = Field(default_factory=utc_now_iso)
    source: str = ""
    payload: Any = None
    correlation_id: str = Field(default_factory=new_correlation_id)
    version: str = "1.0"

    @classmethod
    def new(cls, event_type: str, payload: Any = None, *, source: str = "", correlation_id: str | None = None) -> Self:
        """A fresh event stamped now, with a new correlation id unless one is given."""
        return cls(
            event_type=event_type,
            payload=payload,
            source=source,
            correlation_id=correlation_id or new_correlation_id(),
        )


class Event(WireModel):
    """A fire-and-forget pub/sub event (core NATS); ``correlation_id`` is null when unset."""

    event_type: str
    source: str = ""
    payload: Any = None
    timestamp: Timestamp = Field(default_factory=utc_now_iso)
    correlation_id: str | None = None


class ChannelMessage(WireModel):
    """A message on a JetStream channel; ``metadata`` is omitted from the JSON when None."""

    sender: str
    content: str
    timestamp: float = Field(default_factory=time.time)
    channel: str
    message_id: str = ""
    metadata: Any = None

    @classmethod
    def new(cls, channel: str, sender: str, content: str, metadata: Any = None) -> Self:
        """A message stamped now with id ``{channel}-{unix_nanoseconds}``."""
        now_ns = time.time_ns()
        return cls(
            sender=sender,
            content=content,
            timestamp=now_ns / 1e9,
            channel=channel,
            message_id=f"{channel}-{now_ns}",
            metadata=metadata,
        )

    def to_json(self) -> bytes:
        """Compact JSON; the ``metadata`` key is left out entirely when there is none."""
        exclude = {"metadata"} if self.metadata is None else None
        return self._dump_json(exclude)


class BeingState(enum.StrEnum):
    """What a being (agent) is doing."""

    IDLE = "idle"
    WORKING = "working"
    BLOCKED = "blocked"
    OFFLINE = "offline"


class BeingStatus(WireModel):
    """A being's entry in the ``beings_status`` bucket."""

    being_id: str
    state: BeingState = BeingState.IDLE
    current_task: str | None = None
    last_heartbeat: Timestamp = Field(default_factory=utc_now_iso)
    uptime_seconds: int = 0
    memory_mb: float | None = None
    capabilities: list[str] = Field(default_factory=list)
    metadata: Any = None

    @field_validator("uptime_seconds", mode="before")
    @classmethod
    def _whole_seconds(cls, value: Any) -> Any:
        # An integer on the wire; a float from a sloppy writer is truncated rather than refused.
        return int(value) if isinstance(value, float) else value


class ObjectMeta(WireModel):
    """What the object store reports about a stored object."""

    name: str
    bucket: str
    size: int
    sha256: str
    created: str
    description: str | None = None


class ErrorResponse(WireModel):
    """The service builder's error body: ``{"error": "...", "code": 404}``."""

    error: str
    code: int
