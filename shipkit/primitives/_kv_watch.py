"""The KV watch machinery behind :meth:`KvStore.watch`, ``keys``, ``get_all`` and ``history``.

The watch is built on an ordered push consumer rather than nats-py's ``KeyWatcher``, whose
"initial values delivered" ``None`` marker can arrive before the initial values (it trusts a
consumer-info snapshot taken while messages are in flight) and which hides the marker and
tombstones in the value stream. :class:`Watcher` feeds raw entries into a bounded queue;
:class:`KvWatch` turns them into :class:`KvEntry` objects for users, :func:`scan` collects a
one-off snapshot for the store's reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from shipkit import _json
from shipkit._failover import retry_transient
from shipkit.connection import ConnectionManager
from shipkit.errors import NotConnectedError, SerializationError, ShipkitError, translate_nats_errors
from shipkit.logging import get_logger
from shipkit.primitives._bucket import bucket_errors

__all__ = [
    "KvEntry",
    "KvOperation",
    "KvWatch",
    "RawEntry",
    "Watcher",
    "decode_for_scan",
    "entry_operation",
    "kv_errors",
    "scan",
]

log = get_logger(__name__)

KvOperation = Literal["put", "delete", "purge"]
"""What a KV entry records: a value (``put``), a delete marker, or a purge marker."""

_KV_OPERATION_HEADER: Final = "KV-Operation"
_MARKER_REASON_HEADER: Final = "Nats-Marker-Reason"  # server-placed markers (nats-server 2.11+)
_OPERATIONS: Final[dict[str, KvOperation]] = {"DEL": "delete", "PURGE": "purge"}
_MARKER_OPERATIONS: Final[dict[str, KvOperation]] = {"MaxAge": "purge", "Purge": "purge", "Remove": "delete"}
_LIVENESS_CHECK_S: Final = 1.0  # how often a blocked reader checks that the connection is still open
_WATCH_INACTIVE_THRESHOLD_S: Final = 30.0
_SNAPSHOT_INACTIVE_THRESHOLD_S: Final = 5.0


def entry_operation(headers: dict[str, str] | None) -> KvOperation | None:
    """The operation a KV message records, from its headers; None for a server marker of an unknown kind."""
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


class RawEntry(NamedTuple):
    """One KV message as the watcher received it, not yet decoded."""

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
_Item = RawEntry | _Marker


class Watcher:
    """An ordered push consumer on ``$KV.{bucket}.{pattern}`` feeding a bounded queue.

    The queue holds raw entries and exactly one ``_INITIAL_DONE`` marker, placed after the last
    entry that existed when the consumer was created: after the first message delivered with
    no messages pending, or at once when the consumer info shows nothing pending and nothing
    delivered. The bounded queue gives back-pressure: a full queue holds the flow-control reply,
    so the server stops sending instead of the client dropping messages.
    """

    def __init__(
        self,
        connection: ConnectionManager,
        bucket: str,
        pattern: str,
        *,
        deliver: api.DeliverPolicy,
        headers_only: bool = False,
        inactive_threshold_s: float = _WATCH_INACTIVE_THRESHOLD_S,
        max_pending: int = 1024,
    ) -> None:
        self._connection = connection
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
        self._last_seq = 0  # stream sequence of the last entry queued: a resume starts after it
        self._unlisten: Callable[[], None] | None = None
        self.stopped = False

    async def _subscribe(self) -> JetStreamContext.PushSubscription:
        deliver, config = self._deliver, None
        if self._last_seq:  # resuming: from the entry after the last one seen, no gap, no repeat
            deliver = api.DeliverPolicy.BY_START_SEQUENCE
            config = api.ConsumerConfig(opt_start_seq=self._last_seq + 1)
        return await self._connection.jetstream.subscribe(
            self._subject,
            stream=f"KV_{self._bucket}",
            cb=self._on_msg,
            config=config,
            ordered_consumer=True,
            deliver_policy=deliver,
            headers_only=self._headers_only or None,
            inactive_threshold=self._inactive_threshold_s,
        )

    async def _resume(self) -> None:
        """The connection is back (maybe on another node): start a new consumer after the last entry.

        The old consumer may have died with its node; if it did not, what it still sends is
        dropped by sequence in :meth:`_on_msg`.
        """
        if self.stopped:
            return
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await old.unsubscribe()
        what = f"kv watch {self._bucket} resume"
        config = self._connection.config

        async def again() -> None:
            with translate_nats_errors(what):
                self._sub = await self._subscribe()

        try:
            await retry_transient(what, again, config.failover_timeout_s)
        except ShipkitError as exc:
            log.error("kv.watch_resume_failed", bucket=self._bucket, error=str(exc))
            return
        log.info("kv.watch_resumed", bucket=self._bucket, after_revision=self._last_seq)

    async def start(self) -> None:
        """Create the consumer (a stopped watcher stays stopped); a failed start stops the watcher."""
        if self.stopped:
            return
        self._nc = self._connection.client
        try:
            with translate_nats_errors(f"kv watch {self._bucket}/{self._subject[len(self._prefix) :]}"):
                self._sub = await self._subscribe()
                self._unlisten = self._connection.on_reconnect(self._resume)
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
            if meta.sequence.stream <= self._last_seq:
                return  # already queued (an old consumer still sending after a resume)
            self._last_seq = meta.sequence.stream
            operation = entry_operation(msg.headers)
            if operation is not None:
                key = msg.subject[len(self._prefix) :]
                await self.queue.put(RawEntry(key, msg.data, meta.sequence.stream, operation, meta.timestamp))
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
        """Unsubscribe and delete the consumer, then wake a blocked reader (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        if self._unlisten is not None:
            self._unlisten()
        sub, self._sub = self._sub, None
        nc = self._nc
        if sub is not None and nc is not None and not nc.is_closed and not nc.is_draining:
            try:
                await sub.unsubscribe()
                # Delete the ephemeral consumer now rather than let it linger for its
                # inactivity threshold: frequent scans would pile up to the server's consumer
                # limit. `_consumer` is the only place nats-py keeps the name after a reset.
                await self._connection.jetstream.delete_consumer(f"KV_{self._bucket}", sub._consumer)
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

    def __init__(
        self,
        connection: ConnectionManager,
        bucket: str,
        key_pattern: str,
        *,
        include_history: bool,
        initial: bool,
        max_pending: int,
    ) -> None:
        self.bucket = bucket
        self.key_pattern = key_pattern
        self.include_history = include_history
        if include_history:
            deliver = api.DeliverPolicy.ALL
        elif initial:
            deliver = api.DeliverPolicy.LAST_PER_SUBJECT
        else:
            deliver = api.DeliverPolicy.NEW
        self._watcher = Watcher(connection, bucket, key_pattern, deliver=deliver, max_pending=max_pending)
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
            with kv_errors("kv watch in", bucket=self.bucket):
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
            entry = decode_for_scan(self.bucket, item)
            if entry is not None:
                return entry


def kv_errors(what: str, *, bucket: str) -> contextlib.AbstractContextManager[None]:
    """Translate nats-py errors of a KV operation; a missing ``KV_{bucket}`` stream is a missing bucket."""
    return bucket_errors(f"{what} {bucket}", "KV", bucket, f"KV_{bucket}")


async def scan(
    connection: ConnectionManager, bucket: str, pattern: str, *, deliver: api.DeliverPolicy, headers_only: bool = False
) -> list[RawEntry]:
    """Every entry a fresh consumer delivers before it is caught up (a one-off snapshot), then stop it."""
    watcher = Watcher(
        connection,
        bucket,
        pattern,
        deliver=deliver,
        headers_only=headers_only,
        inactive_threshold_s=_SNAPSHOT_INACTIVE_THRESHOLD_S,
    )
    with kv_errors("kv scan in", bucket=bucket):
        await watcher.start()
    try:
        raws: list[RawEntry] = []
        while isinstance(item := await watcher.next(), RawEntry):
            raws.append(item)
        return raws
    finally:
        await watcher.stop()


def decode_for_scan(bucket: str, raw: RawEntry) -> KvEntry | None:
    """The entry of a scanned message; an undecodable value is logged (``kv.value_undecodable``) and None."""
    if raw.operation != "put":
        return KvEntry(bucket, raw.key, None, raw.revision, raw.operation, raw.created)
    try:
        value = _json.loads(raw.data, f"kv {bucket}/{raw.key}")
    except SerializationError as exc:
        log.warning(
            "kv.value_undecodable",
            bucket=bucket,
            key=raw.key,
            subject=f"$KV.{bucket}.{raw.key}",
            revision=raw.revision,
            reason=str(exc)[:200],
        )
        return None
    return KvEntry(bucket, raw.key, value, raw.revision, "put", raw.created)
