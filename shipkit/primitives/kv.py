"""Shared state on NATS KV: :class:`KvStore`, its typed :class:`KvEntry` and :class:`KvWatch`.

Values are compact JSON (wire contract §3 "KV"). Buckets use the standard NATS layout (stream
``KV_{bucket}``, subjects ``$KV.{bucket}.{key}``), so any NATS client reads what shipkit writes.

Reading rules:

- ``get`` / ``get_entry`` of a missing or deleted key return ``None``; every other failure raises
  (a value that is not JSON raises :class:`SerializationError` naming bucket and key).
- Scans (``watch``, ``get_all``, ``history``) never die on one bad value: an undecodable entry is
  logged as ``kv.value_undecodable`` (bucket, key, revision, reason) and skipped.

The watch machinery behind ``watch``, ``keys``, ``get_all`` and ``history`` lives in
:mod:`shipkit.primitives._kv_watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, ClassVar, Self

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from shipkit import _json
from shipkit._failover import publish_acked
from shipkit._jetstream import EXPECTED_LAST_SUBJECT_SEQ, KV_OPERATION
from shipkit._names import validate_bucket_name, validate_kv_key, validate_kv_key_pattern
from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import (
    JS_ERR_NO_MESSAGE_FOUND,
    BucketNotFoundError,
    ConfigurationError,
    NotConnectedError,
    RevisionConflictError,
)
from shipkit.primitives._bucket import BucketOwner
from shipkit.primitives._kv_watch import (
    KvEntry,
    KvOperation,
    KvWatch,
    RawEntry,
    decode_for_scan,
    entry_operation,
    kv_errors,
    scan,
)

__all__ = ["KvEntry", "KvOperation", "KvPrimitive", "KvStore", "KvWatch"]


class KvStore(ConnectionOwner):
    """A KV bucket holding JSON values (seed: ``KvStore``).

    ::

        async with KvStore(KvBucketConfig.new("counters").with_ttl_secs(60), conn) as kv:
            revision = await kv.put("hits", {"count": 42})
            assert await kv.get("hits") == {"count": 42}

    Args:
        config: the bucket declaration, or just its name (history 5, no TTL); created on
            :meth:`connect` when missing, used as it is when it exists.
        connection: a shared :class:`ConnectionManager`, or a :class:`NatsConfig` / URL /
            ``None`` for a connection this store owns and closes.

    Raises:
        InvalidNameError: the bucket name is not ``[A-Za-z0-9_-]+``.
    """

    def __init__(
        self, config: KvBucketConfig | str, connection: ConnectionManager | NatsConfig | str | None = None
    ) -> None:
        if isinstance(config, str):
            config = KvBucketConfig.new(validate_bucket_name(config))
        super().__init__(connection)
        self.config = config
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._direct = False

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    def __repr__(self) -> str:
        return f"KvStore(bucket={self.bucket!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Connect (if needed) and create or open the bucket; an owned connection is closed on failure."""
        try:
            return await super().connect()
        except BaseException:
            if self._owns_connection:
                await self.connection.close()
            raise

    async def _setup(self) -> None:
        kv = await self.connection.ensure_kv_bucket(self.config)
        with self._errors("kv status"):
            status = await kv.status()
        self._direct = bool(status.stream_info.config.allow_direct)
        self._kv, self._js = kv, self.connection.jetstream

    async def _teardown(self) -> None:
        self._kv = self._js = None

    def _handle(self) -> tuple[KeyValue, JetStreamContext]:
        kv, js = self._kv, self._js
        if kv is None or js is None:
            raise NotConnectedError(f"{self!r} is not connected: call `await connect()` first")
        if self.connection.jetstream is not js:  # raises NotConnectedError when disconnected
            raise NotConnectedError(f"{self!r}: the connection was closed and reopened; call `await connect()` again")
        return kv, js

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return kv_errors(what, bucket=self.bucket)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> Any | None:
        """The key's current value, or ``None`` when it is missing or deleted.

        Raises:
            InvalidNameError: the key is not a valid KV key.
            SerializationError: the stored value is not JSON (message names bucket and key).
            NotConnectedError / BucketNotFoundError / ...: any other failure.
        """
        entry = await self.get_entry(key)
        return None if entry is None else entry.value

    async def get_entry(self, key: str) -> KvEntry | None:
        """The key's current :class:`KvEntry` (value, revision, created), or ``None`` if missing/deleted."""
        validate_kv_key(key)
        _, js = self._handle()
        subject = f"$KV.{self.bucket}.{key}"
        with self._errors(f"kv get {key} in"):
            try:
                msg = await js.get_msg(f"KV_{self.bucket}", subject=subject, direct=self._direct)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code in (None, JS_ERR_NO_MESSAGE_FOUND):
                    return None
                raise
            except nats.errors.NoRespondersError as exc:  # a direct get with no stream to answer it
                raise BucketNotFoundError(f"kv get {key}: KV bucket {self.bucket!r} does not exist") from exc
        if msg.subject != subject or msg.seq is None or entry_operation(msg.headers) != "put":
            return None
        value = _json.loads(msg.data or b"", f"kv {self.bucket}/{key} (revision {msg.seq})")
        return KvEntry(self.bucket, key, value, msg.seq, "put", msg.time)

    async def keys(self, key_pattern: str = ">") -> list[str]:
        """The keys that currently hold a value, sorted; ``[]`` for an empty bucket."""
        validate_kv_key_pattern(key_pattern)
        raws = await self._snapshot(key_pattern, deliver=api.DeliverPolicy.LAST_PER_SUBJECT, headers_only=True)
        return sorted({raw.key for raw in raws if raw.operation == "put"})

    async def get_all(self, key_pattern: str = ">") -> dict[str, Any]:
        """Every current value matching the pattern, ``{key: value}`` in key order.

        Undecodable values are logged (``kv.value_undecodable``) and left out.
        """
        validate_kv_key_pattern(key_pattern)
        raws = await self._snapshot(key_pattern, deliver=api.DeliverPolicy.LAST_PER_SUBJECT)
        entries = (decode_for_scan(self.bucket, raw) for raw in raws if raw.operation == "put")
        return {entry.key: entry.value for entry in sorted(filter(None, entries), key=lambda e: e.key)}

    async def history(self, key: str) -> list[KvEntry]:
        """The retained revisions of a key, oldest first, delete/purge markers included.

        ``[]`` when the key never existed. Undecodable revisions are logged and left out.
        """
        validate_kv_key(key)
        raws = await self._snapshot(key, deliver=api.DeliverPolicy.ALL)
        return [entry for entry in (decode_for_scan(self.bucket, raw) for raw in raws) if entry is not None]

    def watch(
        self, key_pattern: str = ">", *, include_history: bool = False, initial: bool = True, max_pending: int = 1024
    ) -> KvWatch:
        """Watch the keys matching ``key_pattern`` (``>`` all, ``beings.*`` one level).

        Args:
            key_pattern: a key, or a dotted pattern with ``*`` / ``>`` tokens.
            include_history: start with every retained revision (markers included) instead
                of the current values.
            initial: deliver the current values first; ``False`` delivers only changes made
                after the watch starts.
            max_pending: entries buffered before the server is told to wait (back-pressure).

        Returns:
            A :class:`KvWatch`; use ``async with kv.watch() as watch: async for entry in watch``.

        Raises:
            InvalidNameError: the pattern is not a valid key pattern.
            ConfigurationError: ``include_history`` without ``initial``.
            NotConnectedError: the store is not connected.
        """
        validate_kv_key_pattern(key_pattern)
        if include_history and not initial:
            raise ConfigurationError("watch(include_history=True) replays the past; it cannot also skip it")
        if max_pending < 1:
            raise ConfigurationError(f"watch(max_pending={max_pending}) must be at least 1")
        self._handle()
        return KvWatch(
            self.connection,
            self.bucket,
            key_pattern,
            include_history=include_history,
            initial=initial,
            max_pending=max_pending,
        )

    async def _snapshot(
        self, pattern: str, *, deliver: api.DeliverPolicy, headers_only: bool = False
    ) -> list[RawEntry]:
        self._handle()
        return await scan(self.connection, self.bucket, pattern, deliver=deliver, headers_only=headers_only)

    # -- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: Any) -> int:
        """Store ``value`` (as JSON) under ``key``; return the new revision."""
        validate_kv_key(key)
        return await self._write(f"kv put {key} in", key, _json.dumps(value), None)

    async def create(self, key: str, value: Any) -> int:
        """Store ``value`` only if the key has no value (missing or deleted); return the revision.

        Raises:
            RevisionConflictError: the key already holds a value.
        """
        validate_kv_key(key)
        data, what = _json.dumps(value), f"kv create {key} in"
        try:
            return await self._write(what, key, data, 0)
        except RevisionConflictError:
            deleted_at = await self._deleted_revision(key)
            if deleted_at is None:
                raise
            return await self._write(what, key, data, deleted_at)  # a deleted key can be created again

    async def _deleted_revision(self, key: str) -> int | None:
        """The latest revision of ``key`` if it is a delete or purge marker, else None (one direct get)."""
        self._handle()
        subject = f"$JS.API.DIRECT.GET.KV_{self.bucket}.$KV.{self.bucket}.{key}"
        with self._errors(f"kv get {key} in"):
            msg = await self.connection.request(subject, b"")
        headers = msg.headers or {}
        if headers.get(KV_OPERATION) in ("DEL", "PURGE") and "Nats-Sequence" in headers:
            return int(headers["Nats-Sequence"])
        return None

    async def update(self, key: str, value: Any, revision: int) -> int:
        """Compare-and-set: store ``value`` only if the key's latest revision is ``revision``.

        Raises:
            RevisionConflictError: someone wrote (or deleted) the key since ``revision``.
        """
        validate_kv_key(key)
        return await self._write(f"kv update {key} in", key, _json.dumps(value), revision)

    async def _write(self, what: str, key: str, data: bytes, last: int | None) -> int:
        """Publish one revision, retried through a leader election (``Nats-Msg-Id``: stored once)."""
        self._handle()
        headers = {EXPECTED_LAST_SUBJECT_SEQ: str(last)} if last is not None else None
        with self._errors(what):
            ack = await publish_acked(self.connection, f"$KV.{self.bucket}.{key}", data, headers=headers, what=what)
        return int(ack["seq"])

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        """Mark the key deleted (watchers see a ``delete``; history is kept).

        Args:
            key: the key.
            revision: when given, delete only if this is still the latest revision.
        """
        validate_kv_key(key)
        headers = {KV_OPERATION: "DEL"}
        if revision is not None:
            headers[EXPECTED_LAST_SUBJECT_SEQ] = str(revision)
        await self._marker(f"kv delete {key} in", key, headers)

    async def purge(self, key: str) -> None:
        """Remove the key and all its history, leaving one ``purge`` marker."""
        validate_kv_key(key)
        await self._marker(f"kv purge {key} in", key, {KV_OPERATION: "PURGE", "Nats-Rollup": "sub"})

    async def _marker(self, what: str, key: str, headers: dict[str, str]) -> None:
        """Publish a delete/purge marker, retried through a leader election like every write."""
        self._handle()
        with self._errors(what):
            await publish_acked(self.connection, f"$KV.{self.bucket}.{key}", b"", headers=headers, what=what)

    async def read_modify_write(self, key: str, fn: Callable[[Any | None], Any], *, retries: int = 32) -> KvEntry:
        """Apply ``fn`` to the key's current value and store the result with compare-and-set.

        ``fn`` gets the current value (``None`` when missing or deleted) and returns the new
        one; it may raise to abort (nothing is written). On a concurrent write the read and
        ``fn`` are retried after a short random back-off, so no writer's update is lost.

        Returns:
            The written entry: ``value`` is what ``fn`` returned, ``created`` is ``None``.

        Raises:
            RevisionConflictError: still conflicting after ``retries`` retries.
        """
        validate_kv_key(key)
        attempt = 0
        while True:
            current = await self.get_entry(key)
            value = fn(None if current is None else current.value)
            try:
                if current is None:
                    revision = await self.create(key, value)
                else:
                    revision = await self.update(key, value, current.revision)
                return KvEntry(self.bucket, key, value, revision, "put", None)
            except RevisionConflictError as exc:
                if attempt >= retries:
                    raise RevisionConflictError(
                        f"kv read-modify-write {self.bucket}/{key}: still conflicting after {retries} retries",
                        err_code=exc.err_code,
                        status=exc.status,
                    ) from exc
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            attempt += 1


class KvPrimitive(BucketOwner[KvStore]):
    """A :class:`~shipkit.primitives._bucket.BucketOwner` over one KV bucket (registry, config, health).

    Subclasses set :attr:`DEFAULT_BUCKET`; the underlying :class:`KvStore` is :attr:`store`.

    Args:
        connection: a shared :class:`ConnectionManager`, or a config / URL / ``None`` for an
            owned connection.
        bucket_config: another bucket declaration than the contract's default.
    """

    DEFAULT_BUCKET: ClassVar[KvBucketConfig]

    def __init__(
        self,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        bucket_config: KvBucketConfig | None = None,
    ) -> None:
        config = bucket_config or self.DEFAULT_BUCKET
        super().__init__(connection, lambda shared: KvStore(config, shared))
