"""Where job state lives: :class:`JobStore` (records in KV, revision compare-and-set) and
:class:`Counters` (the id counter and per-transition counts in a JetStream counter stream).

Every state change is a compare-and-set on the record's KV revision, so of two writers racing
for the same transition exactly one wins; that is what makes a claim and a completion record
happen once. Counts are kept as one atomic counter per transition (``count.{from}.{to}``,
``Nats-Incr``); a state's count is what entered it minus what left it, so ``counts()`` reads a
few dozen counters however many jobs exist.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

from nats.js import api

from shipkit import _jetstream as _js
from shipkit._publish import PipelinedPublisher
from shipkit.config import KvBucketConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import RevisionConflictError, SerializationError, translate_nats_errors
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs.models import Job, JobCounts, JobState
from shipkit.logging import get_logger

log = get_logger(__name__)

COALESCE_S = 0.02  # how long counter increments are gathered before they are posted
NEW = "new"  # the pseudo-state a submit comes from
ADJUST = "adjust"  # the pseudo-state recount corrections come from
CAS_ATTEMPTS = 32  # compare-and-set tries before a record that keeps changing is an error


class Written(NamedTuple):
    """What :meth:`JobStore.update` did: the record it started from and the one it left.

    Attributes:
        before: the record the change was applied to.
        after: the record now stored (``before`` itself when there was nothing to write), or
            None when the change declined to touch the record.
        revision: the KV revision holding ``after`` (``before``'s when nothing was written).
    """

    before: Job
    after: Job | None
    revision: int

    @property
    def changed(self) -> bool:
        """True when this update wrote a new record."""
        return self.after is not None and self.after is not self.before


class JobStore:
    """Job records (``job.{id}``) and idempotency keys (``idem.{digest}``) in the queue's KV bucket."""

    def __init__(
        self,
        connection: ConnectionManager,
        layout: QueueLayout,
        publisher: PipelinedPublisher,
    ) -> None:
        self.connection = connection
        self._layout = layout
        self._publisher = publisher
        self._bucket = KvBucketConfig(
            bucket=layout.bucket,
            history=1,
            storage=layout.storage,
            replicas=layout.replicas,
            description=f"shipkit job records of queue {layout.name}",
        )

    async def provision(self) -> None:
        """Create the bucket when missing."""
        await self.connection.ensure_kv_bucket(self._bucket)

    @property
    def _timeout_s(self) -> float:
        return self.connection.config.request_timeout_s

    async def get(self, job_id: str) -> tuple[Job, int] | None:
        """The record and its revision, or None when there is no such job."""
        found = await _js.direct_get_last(self._publisher, self._layout.kv_stream, self._layout.record_subject(job_id))
        if found is None:
            return None
        data, revision = found
        return Job.from_json(data), revision

    async def create(self, job: Job, record: bytes | None = None) -> int:
        """Write a new record (``record``: ``job.to_json()`` if made); :class:`RevisionConflictError` when it exists."""
        data = job.to_json() if record is None else record
        return await self._put(self._layout.record_subject(job.id), data, expected=0)

    async def create_many(self, jobs: list[Job], records: list[bytes]) -> list[int]:
        """Write many new records (``records``: their ``to_json()``), pipelined; their revisions.

        The first conflict raises.
        """
        subject = self._layout.record_subject
        acks = await self._publisher.publish_many(
            [
                (subject(job.id), record, {_js.EXPECTED_LAST_SUBJECT_SEQ: "0"})
                for job, record in zip(jobs, records, strict=True)
            ]
        )
        return [int(ack["seq"]) for ack in acks]

    async def cas(self, job: Job, revision: int) -> int:
        """Replace the record if it is still at ``revision``; return the new revision."""
        return await self._put(self._layout.record_subject(job.id), job.to_json(), expected=revision)

    async def update(
        self, job_id: str, change: Callable[[Job], Job | None], *, known: tuple[Job, int] | None = None
    ) -> Written | None:
        """Apply ``change`` to the record by compare-and-set, re-reading and re-applying on a conflict.

        The one compare-and-set loop of the queue. ``change`` returns the new record, the record
        it got (nothing to write) or None (leave it alone); it may raise to refuse. ``known`` is
        a record and revision the caller has already (a dispatch message's copy, a lease), tried
        before reading. A conflict whose re-read shows exactly what this update wrote means the
        write landed and only its answer was lost (timestamps are fixed by the caller, so a
        retried call writes the same record): that counts as written. None when there is no
        such record.

        Raises:
            RevisionConflictError: the record kept changing for ``CAS_ATTEMPTS`` tries.
        """
        found = known if known is not None else await self.get(job_id)
        for _ in range(CAS_ATTEMPTS):
            if found is None:
                return None
            job, revision = found
            new = change(job)
            if new is None or new is job:
                return Written(job, new, revision)
            try:
                return Written(job, new, await self.cas(new, revision))
            except RevisionConflictError:
                found = await self.get(job_id)
                if found is not None and found[0] == new:
                    return Written(job, new, found[1])
        raise RevisionConflictError(f"job {job_id}: the record kept changing")

    async def _put(self, subject: str, data: bytes, *, expected: int) -> int:
        headers = {_js.EXPECTED_LAST_SUBJECT_SEQ: str(expected)}
        ack = await self._publisher.publish(subject, data, headers=headers)
        return int(ack["seq"])

    async def get_last(self, subject: str) -> tuple[bytes, int] | None:
        """The value on one of the bucket's subjects and its revision; None when there is none."""
        return await _js.direct_get_last(self._publisher, self._layout.kv_stream, subject)

    async def create_key(self, subject: str, data: bytes) -> int:
        """Write a value on a subject that must be new; :class:`RevisionConflictError` when it is taken."""
        return await self._put(subject, data, expected=0)

    async def scan(self) -> AsyncIterator[Job]:
        """Every job record, by an ordered consumer over the bucket (one pass, no per-key requests)."""
        js = self.connection.jetstream
        queue: asyncio.Queue[Job | None] = asyncio.Queue()
        subject = self._layout.record_subject("*")

        async def deliver(msg: object) -> None:
            meta = msg.metadata  # type: ignore[attr-defined]
            headers = msg.headers or {}  # type: ignore[attr-defined]
            if headers.get(_js.KV_OPERATION) not in ("DEL", "PURGE"):
                try:
                    await queue.put(Job.from_json(msg.data))  # type: ignore[attr-defined]
                except SerializationError as exc:
                    log.warning("job.record_undecodable", subject=msg.subject, reason=str(exc))  # type: ignore[attr-defined]
            if meta.num_pending == 0:
                await queue.put(None)

        with translate_nats_errors(f"kv scan {self._layout.bucket}"):
            sub = await js.subscribe(
                subject,
                stream=self._layout.kv_stream,
                cb=deliver,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            await queue.put(None)  # nothing matched: no message will carry the "last one" marker
        try:
            while (job := await asyncio.wait_for(queue.get(), self._timeout_s)) is not None:
                yield job
        finally:
            with translate_nats_errors("kv scan unsubscribe"):
                await sub.unsubscribe()


class Counters:
    """The id counter and the per-transition counters in the queue's counter stream."""

    def __init__(
        self,
        connection: ConnectionManager,
        layout: QueueLayout,
        publisher: PipelinedPublisher,
        *,
        owner: str,
    ) -> None:
        self.connection = connection
        self._layout = layout
        self._publisher = publisher
        self._owner = owner
        self._pending: dict[tuple[str, str], int] = {}
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._posted = 0
        self._config = api.StreamConfig(
            name=layout.counter_stream,
            description=f"shipkit job ids and state counts of queue {layout.name}",
            subjects=[layout.ids_subject, layout.count_filter],
            allow_msg_counter=True,
            allow_direct=True,
            max_msgs_per_subject=1,
            storage=api.StorageType(layout.storage),
            num_replicas=layout.replicas,
            duplicate_window=120.0,
        )

    async def provision(self) -> None:
        """Create the counter stream when missing."""
        await _js.ensure_raw_stream(self.connection, self._config, {"allow_msg_counter": True})

    async def next_ids(self, count: int = 1, *, msg_id: str | None = None) -> int | None:
        """Reserve ``count`` ids; return the last one (the block is ``last-count+1 .. last``).

        With ``msg_id``, a repeat inside the duplicate window reserves nothing and returns None.
        """
        headers = {"Nats-Incr": f"+{count}"}
        if msg_id is not None:
            headers[_js.MSG_ID] = msg_id
        ack = await self._publisher.publish(self._layout.ids_subject, b"", headers=headers)
        if ack.get("duplicate") or ack.get("val") is None:
            return None
        return int(ack["val"])

    async def bump(self, source: str, target: str, delta: int = 1, *, msg_id: str | None = None) -> None:
        """Count ``delta`` transitions ``source -> target`` now (acknowledgement awaited)."""
        await self._publisher.publish(
            self._layout.count_subject(source, target), b"", headers=self._incr(delta, msg_id)
        )

    def add(self, source: str, target: str, delta: int = 1) -> None:
        """Count transitions in the background: coalesced for up to ``COALESCE_S``, then posted.

        Under load this turns thousands of increments a second into a few posts per
        coalescing window; each post carries its own ``Nats-Msg-Id`` so a re-send after a
        restart counts once.
        """
        key = (source, target)
        self._pending[key] = self._pending.get(key, 0) + delta
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(COALESCE_S, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flusher = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Post every coalesced increment now."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        pending, self._pending = self._pending, {}
        for (source, target), delta in pending.items():
            if delta:
                self._posted += 1
                subject = self._layout.count_subject(source, target)
                headers = self._incr(delta, f"{self._owner}.{self._posted}")
                await self._publisher.post(subject, b"", headers=headers, what=f"counter {subject}")

    async def flush_all(self) -> None:
        """Post every coalesced increment, including those a background flush is posting now."""
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing)

    @staticmethod
    def _incr(delta: int, msg_id: str | None) -> dict[str, str]:
        headers = {"Nats-Incr": f"{delta:+d}"}
        if msg_id is not None:
            headers[_js.MSG_ID] = msg_id
        return headers

    async def transitions(self) -> dict[tuple[str, str], int]:
        """Every transition counter: ``{(from, to): count}``."""
        raw = await _js.multi_last(
            self.connection.client,
            self._layout.counter_stream,
            self._layout.count_filter,
            self.connection.config.request_timeout_s,
        )
        skip = len(self._layout.count_filter) - 1  # "{prefix}.count." is what precedes from.to
        counts: dict[tuple[str, str], int] = {}
        for subject, data in raw.items():
            source, _, target = subject[skip:].partition(".")
            try:
                counts[(source, target)] = int(json.loads(data)["val"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SerializationError(f"counter {subject}: unreadable value {data[:40]!r}") from exc
        return counts

    async def counts(self) -> JobCounts:
        """Jobs per state: transitions into it minus transitions out of it."""
        per_state = dict.fromkeys(JobState, 0)
        for (source, target), value in (await self.transitions()).items():
            if target in per_state:
                per_state[JobState(target)] += value
            if source in per_state:
                per_state[JobState(source)] -= value
        return JobCounts(**{state.value: count for state, count in per_state.items()})
