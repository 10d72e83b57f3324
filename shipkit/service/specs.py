"""Frozen, validated records of what a :class:`~shipkit.service.app.Service` declares.

Decorators are sugar over ``Service.add_*`` methods, which build these specs at import time;
the runtime only reads them. Tests can build specs directly, without decorators.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from shipkit.config import KvBucketConfig, StreamConfig
from shipkit.errors import ConfigurationError
from shipkit.service.codec import Signature

__all__ = [
    "QUEUE_GROUP_DEFAULT",
    "ChannelSpec",
    "DefaultHandlerSpec",
    "EventSpec",
    "HandlerSpec",
    "KvWatchSpec",
    "MessageSpec",
    "MutationCallback",
    "check_version",
    "takes_context",
]

QUEUE_GROUP_DEFAULT = "q"
"""The NATS micro default queue group, used unless a handler or service says otherwise."""

MutationCallback = Callable[[str, Any], "tuple[str, Any] | None"]
"""``(command, response) -> (event_type, event_payload) | None``: the seed's mutation callback.

``response`` is what the handler returned (bytes stay bytes)."""


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A request-reply handler on ``{prefix}.{name}``.

    Attributes:
        name: the command (may contain dots: ``item.create``).
        func: the async handler.
        signature: how to call it (see :mod:`shipkit.service.codec`).
        subject: the full subject it answers on.
        queue: queue group (``None`` = every instance answers).
        max_concurrency: handlers of this kind running at once in this process.
        mutation: event type published after success (payload = the reply), or a callback
            ``(command, response) -> (event_type, payload) | None``.
        description / metadata: shown by NATS service discovery.
    """

    name: str
    func: Callable[..., Coroutine[Any, Any, Any]]
    signature: Signature
    subject: str
    queue: str | None = QUEUE_GROUP_DEFAULT
    max_concurrency: int = 256
    mutation: str | MutationCallback | None = None
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint_name(self) -> str:
        """The NATS micro endpoint name (``[A-Za-z0-9_-]+``: dots become ``_``)."""
        return self.name.replace(".", "_")


@dataclass(frozen=True, slots=True)
class DefaultHandlerSpec:
    """The seed's catch-all: ``async def handler(subject: str, payload: bytes) -> bytes | ...``."""

    func: Callable[[str, bytes], Coroutine[Any, Any, Any]]
    max_concurrency: int = 256


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A durable JetStream consumer on the event bus, filtered on ``{event_prefix}.{pattern}``.

    The payload parameter annotated ``ShipEvent`` receives the envelope; any other type is
    validated from the envelope's ``payload``.
    """

    pattern: str
    func: Callable[..., Coroutine[Any, Any, Any]]
    signature: Signature
    durable: str
    filter_subject: str
    stream: StreamConfig
    wants_envelope: bool
    max_concurrency: int = 16
    deliver: Literal["all", "new"] = "all"
    nak_delay_s: float = 1.0


@dataclass(frozen=True, slots=True)
class KvWatchSpec:
    """A KV watch: called with each entry, current values first, then puts and deletes."""

    bucket: KvBucketConfig
    key: str
    func: Callable[..., Coroutine[Any, Any, Any]]
    signature: Signature
    wants_entry: bool


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A core NATS subscription (fire-and-forget; replies when the message has a reply subject)."""

    subject: str
    func: Callable[..., Coroutine[Any, Any, Any]]
    signature: Signature
    queue: str | None = None
    max_concurrency: int = 256
    wants_envelope: bool = False


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel subscription through :class:`~shipkit.primitives.channels.ChannelService`."""

    channel: str
    func: Callable[..., Coroutine[Any, Any, Any]]
    signature: Signature
    replay_history: bool = False
    wants_message: bool = True


_SEMVER_CHARS = frozenset("0123456789.-+abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def check_version(version: str) -> str:
    """``version`` if it is SemVer (``1.2.3``, ``1.2.3-rc.1+build``), else :class:`ConfigurationError`."""
    core = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if len(core) != 3 or not all(part.isdigit() for part in core) or not set(version) <= _SEMVER_CHARS:
        raise ConfigurationError(f"service version {version!r} must be SemVer, like '1.2.3'")
    return version


def takes_context(func: Callable[..., Any], context_type: type) -> bool:
    """True when ``func``'s first parameter is annotated ``context_type`` or named ``ctx``/``context``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: nothing to inspect
        return False
    if not params:
        return False
    try:
        hints = get_type_hints(func)
    except Exception:  # unresolvable annotations (TYPE_CHECKING imports): decide on the name
        hints = {}
    annotation = hints.get(params[0].name)
    if isinstance(annotation, type) and issubclass(annotation, context_type):
        return True
    return annotation is None and params[0].name in ("ctx", "context")
