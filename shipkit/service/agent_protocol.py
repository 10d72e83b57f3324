"""The wire shapes of the Synadia Agent Protocol for NATS v0.3 (spec ``core-protocol.md``).

Shared by the host (:mod:`shipkit.service.agent_host`) and the caller (:mod:`shipkit.agents`):
subjects ``agents.{verb}.{agent}.{owner}.{session}``, the request envelope (plain text or JSON
with base64 attachments, unknown fields kept), the stream chunks ``{"type", "data"}``, the
heartbeat payload, and the ``max_payload`` size grammar (``\\d+(B|KB|MB|GB)``, base 1024).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipkit._json import dumps, loads
from shipkit.errors import ConfigurationError, SerializationError, ServiceError

__all__ = [
    "PROTOCOL_VERSION",
    "QUEUE_GROUP",
    "SERVICE_NAME",
    "AgentPrompt",
    "AgentSubjects",
    "Attachment",
    "Response",
    "Status",
    "chunk",
    "encode_prompt",
    "format_size",
    "heartbeat_payload",
    "parse_prompt",
    "parse_size",
    "query_chunk",
    "response_chunk",
    "utc_now",
]

PROTOCOL_VERSION = "0.3"
"""``metadata.protocol_version``: MAJOR.MINOR of the protocol spoken."""
SERVICE_NAME = "agents"
"""The NATS micro service name every agent registers under."""
QUEUE_GROUP = "agents"
"""The queue group of the ``prompt`` and ``status`` endpoints (instances load-balance)."""

_AGENT_RE = re.compile(r"[a-z0-9-]+")
_OWNER_RE = re.compile(r"[a-z0-9_-]+")
_SIZE_RE = re.compile(r"\s*(\d+)\s*(B|KB|MB|GB)\s*", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_size(text: str) -> int:
    """``"1MB"`` -> 1048576 (the protocol's ``max_payload`` grammar, base 1024)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ConfigurationError(f"size {text!r} must be a number followed by B, KB, MB or GB, like '1MB'")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(size: int) -> str:
    """1048576 -> ``"1MB"``: the largest unit dividing ``size`` evenly."""
    for unit in ("GB", "MB", "KB"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


def utc_now() -> str:
    """The current UTC time in ISO 8601 with a ``Z`` (the heartbeat's ``ts``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AgentSubjects:
    """The subjects of one agent: ``agents.{verb}.{agent}.{owner}.{session}``."""

    agent: str
    owner: str
    session: str = "default"

    def __post_init__(self) -> None:
        if not _AGENT_RE.fullmatch(self.agent):
            raise ConfigurationError(f"agent name {self.agent!r} must be lowercase letters, digits and '-'")
        for what, value in (("owner", self.owner), ("session", self.session)):
            if not _OWNER_RE.fullmatch(value):
                raise ConfigurationError(f"agent {self.agent!r}: {what} {value!r} must be [a-z0-9_-]+")

    def subject(self, verb: str) -> str:
        """The subject of ``verb`` (``prompt``, ``hb``, ``status``)."""
        return f"agents.{verb}.{self.agent}.{self.owner}.{self.session}"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a prompt, a response chunk or a query (bytes decoded from base64)."""

    filename: str
    data: bytes

    @classmethod
    def from_path(cls, path: str | Path) -> Attachment:
        """Read a file; only its base name travels (no directories leak)."""
        file = Path(path)
        return cls(file.name, file.read_bytes())

    def to_wire(self) -> dict[str, str]:
        """``{"filename", "content"}`` with standard, padded base64."""
        return {"filename": self.filename, "content": base64.b64encode(self.data).decode("ascii")}

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> Attachment:
        """Decode one wire attachment; ServiceError(400) naming ``where`` when malformed."""
        if not isinstance(raw, dict) or not isinstance(raw.get("filename"), str) or "content" not in raw:
            raise ServiceError(400, f"{where}: an attachment needs a string 'filename' and a 'content'")
        try:
            data = base64.b64decode(raw["content"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise ServiceError(400, f"{where}: attachment {raw['filename']!r} is not standard base64") from exc
        return cls(raw["filename"], data)


@dataclass(frozen=True, slots=True)
class AgentPrompt:
    """A prompt as an agent receives it (and a query's answer as the agent gets it back).

    Attributes:
        text: the prompt text.
        attachments: decoded attachments, in order.
        extras: top-level envelope fields the protocol does not define, kept verbatim.
    """

    text: str
    attachments: tuple[Attachment, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """Content from the agent (a ``response`` chunk); an agent may yield one to attach files."""

    text: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Status:
    """Progress from the agent (``status`` chunk other than the protocol's ``ack``)."""

    text: str


def response_chunk(value: str | Response) -> bytes:
    """A ``response`` chunk: the short form for text, the object form when files are attached."""
    if isinstance(value, str):
        return chunk("response", value)
    if not value.attachments:
        return chunk("response", value.text)
    return chunk("response", {"text": value.text, "attachments": [a.to_wire() for a in value.attachments]})


def parse_prompt(body: bytes, where: str = "prompt") -> AgentPrompt:
    """Decode a request envelope: JSON when it starts with ``{``, else UTF-8 text.

    Raises:
        ServiceError: 400, with a message naming what is wrong (empty, not UTF-8, no prompt,
            bad attachment).
    """
    stripped = body.lstrip()
    if not stripped:
        raise ServiceError(400, f"{where}: empty payload")
    if not stripped.startswith(b"{"):
        try:
            return AgentPrompt(body.decode())
        except UnicodeDecodeError as exc:
            raise ServiceError(400, f"{where}: neither JSON nor UTF-8 text") from exc
    try:
        value = loads(body)
    except SerializationError as exc:
        raise ServiceError(400, f"{where}: malformed JSON envelope") from exc
    if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
        raise ServiceError(400, f"{where}: the envelope needs a string 'prompt'")
    raw_attachments = value.get("attachments") or []
    if not isinstance(raw_attachments, list):
        raise ServiceError(400, f"{where}: 'attachments' must be a list")
    attachments = tuple(Attachment.from_wire(item, where) for item in raw_attachments)
    extras = {k: v for k, v in value.items() if k not in ("prompt", "attachments")}
    return AgentPrompt(value["prompt"], attachments, extras)


def encode_prompt(text: str, attachments: tuple[Attachment, ...] = (), extras: dict[str, Any] | None = None) -> bytes:
    """The JSON envelope ``{"prompt", "attachments"?, ...extras}``."""
    envelope: dict[str, Any] = {**(extras or {}), "prompt": text}
    if attachments:
        envelope["attachments"] = [a.to_wire() for a in attachments]
    return dumps(envelope)


def chunk(kind: str, data: Any) -> bytes:
    """One stream chunk ``{"type": kind, "data": data}``."""
    return dumps({"type": kind, "data": data})


def query_chunk(query_id: str, reply_subject: str, prompt: str) -> bytes:
    """A mid-stream ``query`` chunk; the caller answers on ``reply_subject``."""
    return chunk("query", {"id": query_id, "reply_subject": reply_subject, "prompt": prompt})


def heartbeat_payload(
    subjects: AgentSubjects, instance_id: str, interval_s: int, prompt_metadata: dict[str, str]
) -> dict[str, Any]:
    """The heartbeat (and ``status`` reply) body, declaring the ``prompt`` endpoint."""
    return {
        "agent": subjects.agent,
        "owner": subjects.owner,
        "session": subjects.session,
        "instance_id": instance_id,
        "ts": utc_now(),
        "interval_s": interval_s,
        "protocol_version": PROTOCOL_VERSION,
        "endpoints": {"prompt": {"subject": subjects.subject("prompt"), "metadata": prompt_metadata}},
    }
