"""Shared state on NATS KV: :class:`KvStore`, its typed :class:`KvEntry` and :class:`KvWatch`.

Values are compact JSON (wire contract §3 "KV"). Buckets use the standard NATS layout (stream
``KV_{bucket}``, subjects ``$KV.{bucket}.{key}``), so any NATS client reads what shipkit writes.

Reading rules:

- ``get`` / ``get_entry`` of a missing or deleted key return ``None``; every other failure raises
  (a value that is not JSON raises :class:`SerializationError` naming bucket and key).
- Scans (``watch``, ``get_all``, ``history``) never die on one bad value: an undecodable entry is
  logged as ``kv.value_undecodable`` (bucket, key, revision, reason) and skipped.

The watch is built on an ordered push consumer rather than nats-py's ``KeyWatcher``, whose
"initial values delivered" ``None`` marker can arrive before the initial values (it trusts a
consumer-info snapshot taken while messages are in flight) and which hides the marker and
tombstones in the value stream. This module is longer than most because the watch machinery,
shared by ``watch``, ``keys``, ``get_all`` and ``history``, belongs with the store it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, NamedTuple, Self

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from shipkit import _json
from shipkit._connectable import Connectable
from shipkit._names import validate_bucket_name, validate_kv_key, validate_kv_key_pattern
from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import (
    BucketNotFoundError,
    ConfigurationError,
    NotConnectedError,
    RevisionConflictError,
    SerializationError,
    StreamNotFoundError,
    translate_nats_errors,
)

__all__ = ["KvEntry", "KvOperation", "KvPrimitive", "KvStore", "KvWatch"]

log = structlog.get_logger(__name__)

KvOperation = Literal["put", "delete", "purge"]
"""What a KV entry records: a value (``put``), a delete marker, or a purge marker."""

_KV_OPERATION_HEADER: Final = "KV-Operation"
_MARKER_REASON_HEADER: Final = "Nats-Marker-Reason"  # server-placed markers (nats-server 2.11+)
_OPERATIONS: Final[dict[str, KvOperation]] = {"DEL": "delete", "PURGE": "purge"}
_MARKER_OPERATIONS: Final[dict[str, KvOperation]] = {"MaxAge": "purge", "Purge": "purge", "Remove": "delete"}
_JS_ERR_NO_MESSAGE_FOUND: Final = 10037
_LIVENESS_CHECK_S: Final = 1.0  # how often a blocked reader checks that the connection is still open
_WATCH_INACTIVE_THRESHOLD_S: Final = 30.0
_SNAPSHOT_INACTIVE_THRESHOLD_S: Final = 5.0


def _operation(headers: dict[str, str] | None) -> KvOperation | None:
    """The entry's operation from its headers; None for a server marker of an unknown kind."""
    if not headers:
        return "put"
    op = headers.get(_KV_OPERATION_HEADER)
    if op is not None:
        return _OPERATIONS.get(op, "put")
    reason = headers.get(_MARKER_REASON_HEADER)
    if reason is not None:
        return _MARKER_OPERATIONS.get(reason)
    return "put"


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One revision of one key.

    Attributes:
        bucket: the bucket it belongs to.
        key: the key.
        value: the decoded JSON value; ``None`` for delete and purge markers.
        revision: the revision (the stream sequence of the write); pass it to
            :meth:`KvStore.update` for compare-and-set.
        operation: ``"put"``, ``"delete"`` or ``"purge"``.
        created: when the server stored it (UTC); ``None`` for an entry built from a write
            (:meth:`KvStore.read_modify_write`).
    """

    bucket: str
    key: str
    value: Any
    revision: int
    operation: KvOperation = "put"
    created: datetime | None = None

    @property
    def deleted(self) -> bool:
        """True for a delete or purge marker."""
        return self.operation != "put"


class _Raw(NamedTuple):
    key: str
    data: bytes
    revision: int
    operation: KvOperation
    created: datetime | None


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_INITIAL_DONE: Final = _Marker("initial-done")
_STOP: Final = _Marker("stop")
_Item = _Raw | _Marker


class _Watcher:
    """An ordered push consumer on ``$KV.{bucket}.{pattern}`` feeding a bounded queue.

    The queue holds raw entries and exactly one ``_INITIAL_DONE`` marker, placed after the last
    entry that existed when the consumer was created: after the first message delivered with
    no messages pending, or at once when the consumer info shows nothing pending and nothing
    delivered. The bounded queue gives back-pressure: a full queue holds the flow-control reply,
    so the server stops sending instead of the client dropping messages.
    """

    def __init__(
        self,
        conn: ConnectionManager,
        bucket: str,
        pattern: str,
        *,
        deliver: api.DeliverPolicy,
        headers_only: bool = False,
        inactive_threshold_s: float = _WATCH_INACTIVE_THRESHOLD_S,
        max_pending: int = 1024,
    ) -> None:
        self._conn = conn
        self._bucket = bucket
        self._prefix = f"$KV.{bucket}."
        self._subject = f"{self._prefix}{pattern}"
        self._deliver = deliver
        self._headers_only = headers_only
        self._inactive_threshold_s = inactive_threshold_s
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(max_pending)
        self._nc: Client | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._initial_sent = False
        self.stopped = False

    async def start(self) -> None:
        if self.stopped:
            return
        self._nc = self._conn.client
        try:
            with translate_nats_errors(f"kv watch {self._bucket}/{self._subject[len(self._prefix) :]}"):
                self._sub = await self._conn.jetstream.subscribe(
                    self._subject,
                    stream=f"KV_{self._bucket}",
                    cb=self._on_msg,
                    ordered_consumer=True,
                    deliver_policy=self._deliver,
                    headers_only=self._headers_only or None,
                    inactive_threshold=self._inactive_threshold_s,
                )
                if self._deliver == api.DeliverPolicy.NEW:
                    await self._mark_initial()
                    return
                info = await self._sub.consumer_info()
        except BaseException:
            await self.stop()  # a failed start ends the watch instead of leaving a reader hanging
            raise
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if not info.num_pending and not delivered:
            await self._mark_initial()

    async def _mark_initial(self) -> None:
        if not self._initial_sent:
            self._initial_sent = True
            await self.queue.put(_INITIAL_DONE)

    async def _on_msg(self, msg: Msg) -> None:
        # Runs in nats-py's per-subscription task: it must never raise, or the error goes to
        # the connection's error callback and the entry is lost without a word.
        try:
            meta = msg.metadata
            operation = _operation(msg.headers)
            if operation is not None:
                key = msg.subject[len(self._prefix) :]
                await self.queue.put(_Raw(key, msg.data, meta.sequence.stream, operation, meta.timestamp))
            else:
                log.debug("kv.marker_ignored", bucket=self._bucket, subject=msg.subject, headers=msg.headers)
            if meta.num_pending == 0:
                await self._mark_initial()
        except Exception as exc:
            log.error("kv.watch_message_failed", bucket=self._bucket, subject=msg.subject, error=repr(exc))

    async def next(self) -> _Item:
        """The next queued item; ``_STOP`` once stopped; NotConnectedError if the connection closed."""
        while True:
            if self.stopped:
                return _STOP
            with contextlib.suppress(asyncio.QueueEmpty):
                return self.queue.get_nowait()
            if self._nc is None or self._nc.is_closed:
                raise NotConnectedError(f"kv watch on {self._bucket!r} ended: the NATS connection was closed")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.queue.get(), _LIVENESS_CHECK_S)

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        sub, self._sub = self._sub, None
        nc = self._nc
        if sub is not None and nc is not None and not nc.is_closed and not nc.is_draining:
            try:
                await sub.unsubscribe()
                # Delete the ephemeral consumer now rather than let it linger for its
                # inactivity threshold: frequent scans would pile up to the server's consumer
                # limit. `_consumer` is the only place nats-py keeps the name after a reset.
                await self._conn.jetstream.delete_consumer(f"KV_{self._bucket}", sub._consumer)
            except (nats.errors.Error, nats.js.errors.Error, NotConnectedError) as exc:
                # Cleanup only: the server drops the consumer after its inactivity threshold.
                log.debug("kv.watch_cleanup_failed", bucket=self._bucket, error=repr(exc))
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_STOP)  # wake a reader blocked in next()


class KvWatch:
    """An async iterator of :class:`KvEntry` for the keys matching a pattern.

    Yields the current value of every matching key first (deleted keys are left out of this
    snapshot unless ``include_history``), then every change as it happens: puts, deletes and
    purges, each with its revision. A value that is not JSON is logged and skipped; the watch
    goes on. Close it with ``async with`` or :meth:`aclose`; iteration then ends. If the
    connection closes underneath, iteration raises :class:`NotConnectedError`.

    :attr:`initial_done` turns True (and :meth:`wait_initial_done` returns) when the consumer
    asks for the next entry after the last initial one — for an empty snapshot, at the first
    ``__anext__``. So a loop that handles each entry before asking for the next has handled
    every initial value by then.

    Entries whose key expired through the bucket's TTL disappear without an event unless the
    bucket has server limit markers (nats-server 2.11+), which arrive as ``purge``.
    """

    def __init__(self, store: KvStore, key_pattern: str, *, include_history: bool, initial: bool, max_pending: int):
        self.store = store
        self.key_pattern = key_pattern
        self.include_history = include_history
        if include_history:
            deliver = api.DeliverPolicy.ALL
        elif initial:
            deliver = api.DeliverPolicy.LAST_PER_SUBJECT
        else:
            deliver = api.DeliverPolicy.NEW
        self._watcher = _Watcher(store.connection, store.bucket, key_pattern, deliver=deliver, max_pending=max_pending)
        self._started = False
        self._initial_done = asyncio.Event()

    @property
    def initial_done(self) -> bool:
        """True once every initial value has been yielded (see the class docstring)."""
        return self._initial_done.is_set()

    async def wait_initial_done(self) -> None:
        """Return once :attr:`initial_done` is True (needs someone iterating the watch)."""
        await self._initial_done.wait()

    async def start(self) -> Self:
        """Create the server-side consumer; idempotent (iteration and ``async with`` call it)."""
        if not self._started:
            self._started = True
            with self.store._errors("kv watch in"):
                await self._watcher.start()
        return self

    async def aclose(self) -> None:
        """Stop the watch; a pending ``__anext__`` ends iteration. Idempotent."""
        await self._watcher.stop()

    close = aclose

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> KvEntry:
        if not self._started:
            await self.start()
        while True:
            item = await self._watcher.next()
            if isinstance(item, _Marker):
                if item is _STOP:
                    raise StopAsyncIteration
                self._initial_done.set()
                continue
            if item.operation != "put" and not self.include_history and not self._initial_done.is_set():
                continue  # a tombstone is not a current value
            entry = self.store._decode_for_scan(item)
            if entry is not None:
                return entry


class KvStore(Connectable):
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
        self.config = config
        self.connection, self._owns_connection = resolve_connection(connection)
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
        """Connect (if this store owns the connection) and create or open the bucket."""
        try:
            await self.connection.connect()
            kv = await self.connection.ensure_kv_bucket(self.config)
            with self._errors("kv status"):
                status = await kv.status()
        except BaseException:
            if self._owns_connection:
                await self.connection.close()
            raise
        self._direct = bool(status.stream_info.config.allow_direct)
        self._kv, self._js = kv, self.connection.jetstream
        return self

    async def close(self) -> None:
        """Forget the bucket; close the connection only if this store owns it."""
        self._kv = self._js = None
        if self._owns_connection:
            await self.connection.close()

    def _handle(self) -> tuple[KeyValue, JetStreamContext]:
        kv, js = self._kv, self._js
        if kv is None or js is None:
            raise NotConnectedError(f"{self!r} is not connected: call `await connect()` first")
        if self.connection.jetstream is not js:  # raises NotConnectedError when disconnected
            raise NotConnectedError(f"{self!r}: the connection was closed and reopened; call `await connect()` again")
        return kv, js

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            with translate_nats_errors(f"{what} {self.bucket}"):
                yield
        except StreamNotFoundError as exc:
            raise BucketNotFoundError(
                f"{what}: KV bucket {self.bucket!r} does not exist (no stream KV_{self.bucket})",
                err_code=exc.err_code,
                status=exc.status,
            ) from exc

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
                if exc.err_code in (None, _JS_ERR_NO_MESSAGE_FOUND):
                    return None
                raise
            except nats.errors.NoRespondersError as exc:  # a direct get with no stream to answer it
                raise BucketNotFoundError(f"kv get {key}: KV bucket {self.bucket!r} does not exist") from exc
        if msg.subject != subject or msg.seq is None or _operation(msg.headers) != "put":
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
        entries = (self._decode_for_scan(raw) for raw in raws if raw.operation == "put")
        return {entry.key: entry.value for entry in sorted(filter(None, entries), key=lambda e: e.key)}

    async def history(self, key: str) -> list[KvEntry]:
        """The retained revisions of a key, oldest first, delete/purge markers included.

        ``[]`` when the key never existed. Undecodable revisions are logged and left out.
        """
        validate_kv_key(key)
        raws = await self._snapshot(key, deliver=api.DeliverPolicy.ALL)
        return [entry for entry in map(self._decode_for_scan, raws) if entry is not None]

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
        return KvWatch(self, key_pattern, include_history=include_history, initial=initial, max_pending=max_pending)

    async def _snapshot(self, pattern: str, *, deliver: api.DeliverPolicy, headers_only: bool = False) -> list[_Raw]:
        self._handle()
        watcher = _Watcher(
            self.connection,
            self.bucket,
            pattern,
            deliver=deliver,
            headers_only=headers_only,
            inactive_threshold_s=_SNAPSHOT_INACTIVE_THRESHOLD_S,
        )
        with self._errors("kv scan in"):
            await watcher.start()
        try:
            raws: list[_Raw] = []
            while isinstance(item := await watcher.next(), _Raw):
                raws.append(item)
            return raws
        finally:
            await watcher.stop()

    def _decode_for_scan(self, raw: _Raw) -> KvEntry | None:
        if raw.operation != "put":
            return KvEntry(self.bucket, raw.key, None, raw.revision, raw.operation, raw.created)
        try:
            value = _json.loads(raw.data, f"kv {self.bucket}/{raw.key}")
        except SerializationError as exc:
            log.warning(
                "kv.value_undecodable",
                bucket=self.bucket,
                key=raw.key,
                subject=f"$KV.{self.bucket}.{raw.key}",
                revision=raw.revision,
                reason=str(exc)[:200],
            )
            return None
        return KvEntry(self.bucket, raw.key, value, raw.revision, "put", raw.created)

    # -- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: Any) -> int:
        """Store ``value`` (as JSON) under ``key``; return the new revision."""
        validate_kv_key(key)
        data = _json.dumps(value)
        kv, _ = self._handle()
        with self._errors(f"kv put {key} in"):
            return await kv.put(key, data, validate_keys=False)

    async def create(self, key: str, value: Any) -> int:
        """Store ``value`` only if the key has no value (missing or deleted); return the revision.

        Raises:
            RevisionConflictError: the key already holds a value.
        """
        validate_kv_key(key)
        data = _json.dumps(value)
        kv, _ = self._handle()
        with self._errors(f"kv create {key} in"):
            return await kv.create(key, data, validate_keys=False)

    async def update(self, key: str, value: Any, revision: int) -> int:
        """Compare-and-set: store ``value`` only if the key's latest revision is ``revision``.

        Raises:
            RevisionConflictError: someone wrote (or deleted) the key since ``revision``.
        """
        validate_kv_key(key)
        data = _json.dumps(value)
        kv, _ = self._handle()
        with self._errors(f"kv update {key} in"):
            return await kv.update(key, data, last=revision, validate_keys=False)

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        """Mark the key deleted (watchers see a ``delete``; history is kept).

        Args:
            key: the key.
            revision: when given, delete only if this is still the latest revision.
        """
        validate_kv_key(key)
        kv, _ = self._handle()
        with self._errors(f"kv delete {key} in"):
            await kv.delete(key, last=revision, validate_keys=False)

    async def purge(self, key: str) -> None:
        """Remove the key and all its history, leaving one ``purge`` marker."""
        validate_kv_key(key)
        kv, _ = self._handle()
        with self._errors(f"kv purge {key} in"):
            await kv.purge(key)

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


class KvPrimitive(Connectable):
    """Base of the primitives that keep their state in one KV bucket.

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
        self.store = KvStore(bucket_config or self.DEFAULT_BUCKET, connection)

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.store.bucket

    async def connect(self) -> Self:
        """Connect (if owned) and create or open the bucket."""
        await self.store.connect()
        return self

    async def close(self) -> None:
        """Close the connection if owned."""
        await self.store.close()
