"""Connection and resource configuration: :class:`NatsConfig`, :class:`StreamConfig`,
:class:`KvBucketConfig`, :class:`ObjectStoreConfig`.

Defaults follow the noesis-ship wire contract (event bus 24 h / 100 000 messages / file storage;
KV history 5). All configs are frozen pydantic models; derive a variant with
``config.model_copy(update={...})`` or the ``with_*`` helpers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from shipkit._names import (
    validate_bucket_name,
    validate_stream_name,
    validate_subject,
)
from shipkit.errors import ConfigurationError

__all__ = [
    "DEFAULT_NATS_URL",
    "KvBucketConfig",
    "NatsConfig",
    "ObjectStoreConfig",
    "StreamConfig",
    "default_nats_url",
    "default_replicas",
]

DEFAULT_NATS_URL = "nats://localhost:4222"

StorageType = Literal["file", "memory"]
RetentionPolicy = Literal["limits", "interest", "workqueue"]
DiscardPolicy = Literal["old", "new"]


def _redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` / ``token@`` part replaced by ``***@`` (for logs and repr)."""
    scheme, sep, rest = url.rpartition("://")
    host = rest.rpartition("@")[2]
    return f"{scheme}{sep}***@{host}" if "@" in rest else url


def _pop_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``nats://us%40r:p%3Ass@host`` -> ``("nats://host", "us@r", "p:ss")``: userinfo out, percent-decoded.

    A userinfo without ``:`` is a token (``nats://TOKEN@host``) and comes back as the user part.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), unquote(user), unquote(password) if colon else None


def _split_urls(text: str) -> list[str]:
    """``"nats://a:1, nats://b:2"`` -> ``["nats://a:1", "nats://b:2"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def default_replicas() -> int | None:
    """``SHIPKIT_REPLICAS`` as an int (1-5), or None when unset.

    Raises:
        ConfigurationError: the variable is set to something else.
    """
    text = os.environ.get("SHIPKIT_REPLICAS", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise ConfigurationError(f"SHIPKIT_REPLICAS must be a whole number from 1 to 5, got {text!r}")
    return int(text)


def default_nats_url() -> str:
    """The URL used when none is given: ``SHIPKIT_NATS_URL``, else ``NATS_URL``, else localhost:4222."""
    return os.environ.get("SHIPKIT_NATS_URL") or os.environ.get("NATS_URL") or DEFAULT_NATS_URL


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NatsConfig(_Frozen):
    """How to reach the NATS server(s).

    Secrets (``password``, ``token``) are ``SecretStr`` and never appear in ``repr`` or logs;
    credential files are passed to nats-py by path.

    Attributes:
        servers: one URL or a list of cluster seed URLs.
        name: connection name shown by the server (``nats server report connections``).
        connect_timeout_s: per-attempt connect timeout.
        request_timeout_s: default timeout for requests and JetStream API calls.
        user / password / token: plain credentials.
        nkeys_seed: path to an nkey seed file.
        creds_file: path to a ``.creds`` file (JWT + nkey).
        tls_ca_file / tls_cert_file / tls_key_file: TLS trust and client certificate.
        tls_hostname: expected server hostname when it differs from the URL.
        allow_reconnect / max_reconnect_attempts / reconnect_time_wait_s: reconnect policy
            (``max_reconnect_attempts=-1`` retries forever, right for long-running services).
        ping_interval_s / max_outstanding_pings: liveness probing of the server.
        drain_timeout_s: how long ``close`` waits for in-flight messages to drain.
        failover_timeout_s: how long a publish that needs an ack is retried through a leader
            election or node loss before :class:`~shipkit.errors.ClusterUnavailableError`.
        replicas: replicas of every stream, bucket and object store shipkit provisions whose
            declaration does not set its own (default ``SHIPKIT_REPLICAS``; None: R1).
    """

    # A validation error would otherwise quote the whole input, secrets included.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    servers: list[str] = Field(default_factory=lambda: _split_urls(default_nats_url()))
    name: str | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    nkeys_seed: Path | None = None
    creds_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_hostname: str | None = None
    allow_reconnect: bool = True
    max_reconnect_attempts: int = -1
    # Short: a restarted server is used again within about half a second (the resume target is 1.5 s).
    reconnect_time_wait_s: float = Field(default=0.5, ge=0)
    ping_interval_s: float = Field(default=120.0, gt=0)
    max_outstanding_pings: int = Field(default=2, ge=1)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    failover_timeout_s: float = Field(default=10.0, gt=0)
    replicas: int | None = Field(default_factory=default_replicas, ge=1, le=5)

    @model_validator(mode="before")
    @classmethod
    def _accept_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            data = dict(data)
            url = data.pop("url")
            if url is not None:
                data["servers"] = url
        return data

    @model_validator(mode="before")
    @classmethod
    def _move_url_credentials(cls, data: Any) -> Any:
        # Credentials in a URL move to user/password/token (percent-decoded, as RFC 3986 says),
        # so nats-py gets the real secret and no dump, repr or error carries it in a URL.
        if not isinstance(data, dict):
            return data
        key = "url" if data.get("url") is not None else "servers"
        raw = data.get(key)
        if raw is None:
            return data
        urls = _split_urls(raw) if isinstance(raw, str) else list(raw)
        found: set[tuple[str | None, str | None]] = set()
        clean: list[Any] = []
        for url in urls:
            if not isinstance(url, str):
                clean.append(url)
                continue
            stripped, user, password = _pop_url_credentials(url)
            clean.append(stripped)
            if user is not None:
                found.add((user, password))
        if not found:
            return data
        if len(found) > 1:
            raise ValueError("server URLs carry different credentials; give one set with user/password or token")
        user, password = found.pop()
        data = {**data, key: clean}
        wanted = {"user": user, "password": password} if password is not None else {"token": user}
        for field, value in wanted.items():
            given = data.get(field)
            given = given.get_secret_value() if isinstance(given, SecretStr) else given
            if given is not None and given != value:
                raise ValueError(f"{field} is given both in a server URL and as an option, with different values")
            data[field] = value
        return data

    @field_validator("servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _split_urls(value)
        if not value:
            raise ValueError("at least one server URL is required")
        return value

    @model_validator(mode="after")
    def _check_tls_pair(self) -> NatsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Credentials embedded in a URL (nats://user:pass@host) must not reach repr or logs either.
        for name, value in super().__repr_args__():
            yield name, ([_redact_url(s) for s in value] if name == "servers" else value)

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> NatsConfig:
        """A config for ``url`` (comma-separated for several), or the environment default."""
        return cls(servers=_split_urls(url or default_nats_url()), **options)

    @property
    def url(self) -> str:
        """The first server URL (what noesis-ship calls ``url``)."""
        return self.servers[0]

    @property
    def uses_tls(self) -> bool:
        """True when any TLS option is set or a server URL uses ``tls://``."""
        return bool(self.tls_ca_file or self.tls_cert_file or any(s.startswith("tls://") for s in self.servers))


def _enum_value(value: Any) -> Any:
    """nats-py returns enums or plain strings depending on the path; compare by value."""
    return getattr(value, "value", value)


def _seconds(value: float | None) -> float | None:
    return None if value is None or value <= 0 else float(value)


class StreamConfig(_Frozen):
    """A JetStream stream shipkit provisions when missing.

    Defaults are the event bus's (``SHIP_EVENTS`` on ``ship.events.>``, 24 h, 100 000
    messages, file storage). ``replicas`` > 1 needs a cluster; ``duplicate_window_s`` is the
    window in which a repeated ``Nats-Msg-Id`` is dropped.
    """

    name: str = "SHIP_EVENTS"
    subjects: list[str] = Field(default_factory=lambda: ["ship.events.>"])
    max_age_s: float = 24 * 3600.0
    max_msgs: int = 100_000
    max_bytes: int = -1
    max_msg_size: int = -1
    storage: StorageType = "file"
    replicas: int = Field(default=1, ge=1, le=5)
    retention: RetentionPolicy = "limits"
    discard: DiscardPolicy = "old"
    duplicate_window_s: float = 120.0
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_stream_name(value)

    @field_validator("subjects")
    @classmethod
    def _valid_subjects(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a stream needs at least one subject")
        for subject in value:
            validate_subject(subject, "stream subject", wildcards=True)
        return value

    @classmethod
    def new(cls, name: str, subjects: list[str] | str) -> StreamConfig:
        """A stream with the default limits (seed: ``StreamConfig::new``)."""
        return cls(name=name, subjects=[subjects] if isinstance(subjects, str) else subjects)

    @classmethod
    def event_bus(cls, name: str = "SHIP_EVENTS", prefix: str = "ship.events") -> StreamConfig:
        """The event-bus stream for ``prefix`` (``{prefix}.>``)."""
        return cls(name=name, subjects=[f"{prefix}.>"])

    @classmethod
    def channels(cls) -> StreamConfig:
        """The ``CHANNELS`` stream: ``ship.channel.>``, 30 days, 10 000 messages."""
        return cls(name="CHANNELS", subjects=["ship.channel.>"], max_age_s=30 * 24 * 3600.0, max_msgs=10_000)

    def with_max_age(self, seconds: float) -> StreamConfig:
        """A copy with another retention age."""
        return self.model_copy(update={"max_age_s": seconds})

    def with_max_msgs(self, count: int) -> StreamConfig:
        """A copy with another message limit."""
        return self.model_copy(update={"max_msgs": count})

    def with_memory_storage(self) -> StreamConfig:
        """A copy stored in memory instead of files."""
        return self.model_copy(update={"storage": "memory"})

    def with_replicas(self, replicas: int) -> StreamConfig:
        """A copy replicated ``replicas`` times (needs a cluster)."""
        return self.model_copy(update={"replicas": replicas})

    def to_nats(self) -> Any:
        """The nats-py ``StreamConfig`` for this declaration."""
        from nats.js import api

        return api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy(self.retention),
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            discard=api.DiscardPolicy(self.discard),
            max_age=_seconds(self.max_age_s),
            storage=api.StorageType(self.storage),
            num_replicas=self.replicas,
            duplicate_window=_seconds(self.duplicate_window_s) or 0,
        )

    def drift(self, existing: Any) -> dict[str, tuple[Any, Any]]:
        """Fields where an existing nats-py ``StreamConfig`` differs: ``{field: (declared, actual)}``."""
        declared = self.to_nats()
        fields = (
            "subjects",
            "retention",
            "max_msgs",
            "max_bytes",
            "max_msg_size",
            "discard",
            "max_age",
            "storage",
            "num_replicas",
            "duplicate_window",
        )
        diff: dict[str, tuple[Any, Any]] = {}
        for name in fields:
            want, have = getattr(declared, name), getattr(existing, name, None)
            if name == "subjects":
                want, have = sorted(want or []), sorted(have or [])
            want, have = _enum_value(want), _enum_value(have)
            if name in ("max_age", "duplicate_window"):
                want, have = float(want or 0), float(have or 0)
            if name == "duplicate_window" and self.duplicate_window_s == 120.0 and have:
                continue  # the server's default; only a value we set explicitly counts as drift
            if want != have:
                diff[name] = (want, have)
        return diff


class KvBucketConfig(_Frozen):
    """A KV bucket shipkit provisions when missing (seed defaults: history 5, no TTL, file storage)."""

    bucket: str
    history: int = Field(default=5, ge=1, le=64)
    ttl_s: float | None = None
    max_value_size: int = -1
    max_bytes: int = -1
    storage: StorageType = "file"
    replicas: int = Field(default=1, ge=1, le=5)
    description: str | None = None

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        return validate_bucket_name(value)

    @classmethod
    def new(cls, bucket: str) -> KvBucketConfig:
        """A bucket with the default settings (seed: ``KvBucketConfig::new``)."""
        return cls(bucket=bucket)

    def with_history(self, history: int) -> KvBucketConfig:
        """A copy keeping ``history`` revisions per key."""
        return self.model_copy(update={"history": history})

    def with_ttl_secs(self, seconds: float) -> KvBucketConfig:
        """A copy whose entries expire ``seconds`` after their last write."""
        return self.model_copy(update={"ttl_s": seconds})

    def to_nats(self) -> Any:
        """The nats-py ``KeyValueConfig``."""
        from nats.js import api

        return api.KeyValueConfig(
            bucket=self.bucket,
            description=self.description,
            history=self.history,
            ttl=_seconds(self.ttl_s),
            max_value_size=self.max_value_size,
            max_bytes=self.max_bytes,
            storage=api.StorageType(self.storage),
            replicas=self.replicas,
            direct=True,  # direct gets, as the Go and Rust clients create buckets: faster reads
        )

    def drift(self, existing_stream: Any) -> dict[str, tuple[Any, Any]]:
        """Fields where the bucket's backing stream config differs from this declaration."""
        actual = {
            "history": getattr(existing_stream, "max_msgs_per_subject", None),
            "ttl_s": float(getattr(existing_stream, "max_age", None) or 0),
            "storage": _enum_value(getattr(existing_stream, "storage", None)),
            "replicas": getattr(existing_stream, "num_replicas", None),
        }
        declared = {
            "history": self.history,
            "ttl_s": float(self.ttl_s or 0),
            "storage": self.storage,
            "replicas": self.replicas,
        }
        return {k: (declared[k], actual[k]) for k in declared if declared[k] != actual[k]}


class ObjectStoreConfig(_Frozen):
    """An object-store bucket shipkit provisions when missing."""

    bucket: str
    description: str | None = None
    ttl_s: float | None = None
    max_bytes: int = -1
    storage: StorageType = "file"
    replicas: int = Field(default=1, ge=1, le=5)

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        return validate_bucket_name(value)

    def to_nats(self) -> Any:
        """The nats-py ``ObjectStoreConfig``."""
        from nats.js import api

        return api.ObjectStoreConfig(
            bucket=self.bucket,
            description=self.description,
            ttl=_seconds(self.ttl_s),
            max_bytes=self.max_bytes,
            storage=api.StorageType(self.storage),
            replicas=self.replicas,
        )

    def drift(self, existing_stream: Any) -> dict[str, tuple[Any, Any]]:
        """Fields where the bucket's backing stream config differs from this declaration."""
        actual = {
            "storage": _enum_value(getattr(existing_stream, "storage", None)),
            "replicas": getattr(existing_stream, "num_replicas", None),
        }
        declared = {"storage": self.storage, "replicas": self.replicas}
        return {k: (declared[k], actual[k]) for k in declared if declared[k] != actual[k]}
