"""A durable job queue on NATS JetStream, shared by every process and machine: :class:`JobQueue`.

The noesis-ship ``JobQueue`` API (``submit``, ``claim``, ``complete``, ``fail``, ``get``,
``list``, ``counts``) in async form, plus the lifecycle the seed lacks: delays and recurring
schedules, retries with backoff, dead letters, cancellation, progress, large results and
idempotent submits. See ``docs/jobs.md`` for the design and its guarantees::

    async with JobQueue("nats://localhost:4222") as queue:
        job_id = await queue.submit({"epochs": 3}, "trainer", "planner")
        job = await queue.claim("trainer")          # or run a JobWorker
        await queue.complete(job.id, {"loss": 0.1})

NATS layout: a KV bucket of job records (every transition is a revision compare-and-set), a
work-queue stream with one pull consumer per worker name for dispatch, and a counter stream for
ids and per-state counts (see :class:`~shipkit.jobs._layout.QueueLayout`).

This module is the public surface (one documented method per operation, hence its length);
the machinery lives in the private modules: ``_store`` (records, ids, counters), ``_dispatch``
(stream, consumers, schedules), ``_holder`` (claiming and settling), ``_lease`` (heartbeats),
``_publisher`` (pipelined publishing), ``_events`` (counts and events), ``_results``.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Generic, Self, TypeVar

import structlog
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from shipkit._connectable import Connectable
from shipkit._names import validate_subject, validate_token
from shipkit.config import NatsConfig, StorageType, StreamConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import (
    ConfigurationError,
    KeyNotFoundError,
    NatsConnectionError,
    NatsTimeoutError,
    RevisionConflictError,
    SerializationError,
    translate_nats_errors,
)
from shipkit.jobs import _transitions as step
from shipkit.jobs._dispatch import Dispatcher
from shipkit.jobs._events import Announcer
from shipkit.jobs._holder import CAS_ATTEMPTS, Holder
from shipkit.jobs._ids import id_number, validate_job_id
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._lease import LeaseKeeper
from shipkit.jobs._publisher import Publisher
from shipkit.jobs._results import ResultStore
from shipkit.jobs._store import ADJUST, NEW, Counters, IdAllocator, JobStore
from shipkit.jobs.errors import JobStateError
from shipkit.jobs.models import Backoff, Job, JobCounts, JobState, now_ms
from shipkit.jobs.schedule import CronExpression, Schedule

__all__ = ["JobQueue"]

log = structlog.get_logger(__name__)

P = TypeVar("P")

_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_CAS_ATTEMPTS = 32
_BULK_CHUNK = 256
_TRANSIENT = (NatsConnectionError, NatsTimeoutError)


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobQueue(Generic[P], Connectable):
    """Jobs on NATS: submit from anywhere, exactly one worker claims each.

    Args:
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig`, a URL, or None
            (the environment's default URL); the queue closes only a connection it made.
        name: the queue's name; every NATS resource name derives from it.
        prefix: job ids are ``{prefix}-{n:03}``.
        subject_prefix: subjects of this queue (default ``ship.jobs.{name}``).
        payload_type: when given, ``submit`` validates payloads against it.
        lease_s: how long a claimed job stays held without a heartbeat (for ``claim``;
            a :class:`JobWorker` uses its own).
        max_attempts: attempts a job gets when neither it nor its worker says otherwise.
        backoff: delays between attempts when neither the worker nor ``fail`` says otherwise.
        events: publish a ``ShipEvent`` for every transition.
        event_stream / event_prefix: the event bus (``SHIP_EVENTS`` on ``ship.events.>``).
        source: the ``source`` of those events.
        result_inline_max_bytes: larger results go to the object store.
        storage / replicas: of the streams and buckets the queue creates.
    """

    def __init__(
        self,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        name: str = "jobs",
        prefix: str = "JOB",
        subject_prefix: str | None = None,
        payload_type: type[P] | None = None,
        lease_s: float = 30.0,
        max_attempts: int = 3,
        backoff: Backoff | None = None,
        events: bool = True,
        event_stream: str = "SHIP_EVENTS",
        event_prefix: str = "ship.events",
        source: str = "",
        result_inline_max_bytes: int = 256 * 1024,
        storage: StorageType = "file",
        replicas: int = 1,
    ) -> None:
        if lease_s <= 0 or max_attempts < 1 or result_inline_max_bytes < 0:
            raise ConfigurationError("JobQueue: lease_s must be > 0, max_attempts >= 1, result_inline_max_bytes >= 0")
        validate_subject(event_prefix, "event prefix")
        self.layout = QueueLayout.build(name, prefix, subject_prefix)
        self._manager, self._owns_manager = resolve_connection(connection)
        self._payload_adapter: TypeAdapter[P] | None = TypeAdapter(payload_type) if payload_type else None
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.instance_id = _instance_id()
        self._events_stream = StreamConfig.event_bus(event_stream, event_prefix) if events else None
        self._publisher = Publisher(self._manager)
        self._store = JobStore(self._manager, self.layout, self._publisher, storage=storage, replicas=replicas)
        self._counters = Counters(
            self._manager, self.layout, self._publisher, owner=self.instance_id, storage=storage, replicas=replicas
        )
        self._dispatcher = Dispatcher(self._manager, self.layout, self._publisher, storage=storage, replicas=replicas)
        self._announcer = Announcer(
            self._publisher, self._counters, queue=name, events=events, event_prefix=event_prefix, source=source
        )
        self._keeper = LeaseKeeper(self._manager, self._store, self.layout.cancel_filter)
        self._ids = IdAllocator(self._counters, self._store, self.layout.prefix)
        self._results = ResultStore(
            self._manager, self.layout, inline_max_bytes=result_inline_max_bytes, storage=storage, replicas=replicas
        )
        self._holder = Holder(
            store=self._store,
            ids=self._ids,
            results=self._results,
            announcer=self._announcer,
            keeper=self._keeper,
            publisher=self._publisher,
            instance_id=self.instance_id,
            default_max_attempts=max_attempts,
        )
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self._connected = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.layout.name

    @property
    def connection(self) -> ConnectionManager:
        """The connection manager the queue uses."""
        return self._manager

    async def connect(self) -> Self:
        """Connect (if the queue owns its connection) and provision its streams and buckets."""
        if self._connected:
            return self
        await self._manager.connect()
        await self._publisher.start()
        await self._store.provision()
        await self._counters.provision()
        await self._dispatcher.provision()
        if self._events_stream is not None:
            await self._manager.ensure_stream(self._events_stream)
        await self._keeper.start()
        self._connected = True
        return self

    async def close(self) -> None:
        """Give back jobs still held through ``claim``, stop renewing leases, close an owned connection."""
        if self._connected and self._manager.is_connected:
            for lease in self._keeper.leases():
                try:
                    await self._holder.give_back(lease)
                except (JobStateError, *_TRANSIENT) as exc:
                    log.warning("job.give_back_failed", job_id=lease.job.id, error=str(exc))
        await self._keeper.stop()
        connected = self._manager.is_connected
        if connected:
            await self._counters.flush_all()
        await self._publisher.stop(drain_s=5.0 if connected else 0.0)
        self._connected = False
        if self._owns_manager:
            await self._manager.close()

    async def flush(self) -> None:
        """Wait until this process's counter updates and events are confirmed by the server."""
        await self._counters.flush_all()
        await self._publisher.flush()

    # -- submitting ------------------------------------------------------------------------

    async def submit(
        self,
        payload: P,
        worker: str,
        queued_by: str = "",
        *,
        delay_s: float | None = None,
        run_at: datetime | float | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Queue a job for ``worker`` and return its id.

        Args:
            payload: any JSON-able value or pydantic model.
            worker: the worker name that will run it.
            queued_by: who queued it (free text, kept in the record).
            delay_s: run no earlier than this many seconds from now.
            run_at: run no earlier than this time (aware datetime or Unix seconds).
            idempotency_key: a repeated submit with the same key returns the first job's id and
                queues nothing (durably: the key is kept with the queue, not only for the
                server's duplicate window).
            max_attempts: attempts for this job (default: the worker's policy).
            timeout_s: per-attempt timeout for this job (default: the worker's).

        Raises:
            SerializationError: the payload is not JSON-able or does not match ``payload_type``.
        """
        validate_token(worker, "worker name")
        value = self._payload_value(payload)
        run_at_ms = _run_at_ms(delay_s, run_at)
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
        if idempotency_key is not None:
            job_id = await self._ids.for_key(idempotency_key)
            found = await self._store.get(job_id)
            if found is not None:
                await self._redispatch_if_waiting(*found)
                return job_id
        else:
            job_id = await self._ids.next()
        now = now_ms()
        scheduled = run_at_ms is not None and run_at_ms > now
        job = Job(
            id=job_id,
            payload=value,
            worker=worker,
            queued_by=queued_by,
            queued_at=now,
            state=JobState.SCHEDULED if scheduled else JobState.QUEUED,
            max_attempts=max_attempts,
            run_at=run_at_ms,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            updated_at=now,
        )
        record = job.to_json()  # serialised once: for the record and its dispatch
        try:
            revision = await self._store.create(job, record)
        except RevisionConflictError:
            return job_id  # an identical idempotent submit created it a moment ago
        await self._send(job, revision, record)
        await self._announcer.transition(NEW, job, revision, "job.queued", queued_by=queued_by, run_at=run_at_ms)
        return job_id

    async def submit_many(
        self,
        payloads: Iterable[P],
        worker: str,
        queued_by: str = "",
        *,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> builtins.list[str]:
        """Queue many jobs for ``worker`` at once (one id reservation, pipelined writes); return their ids."""
        validate_token(worker, "worker name")
        values = [self._payload_value(p) for p in payloads]
        if not values:
            return []
        ids = await self._ids.block(len(values))
        now = now_ms()
        jobs = [
            Job(
                id=job_id,
                payload=value,
                worker=worker,
                queued_by=queued_by,
                queued_at=now,
                max_attempts=max_attempts,
                timeout_s=timeout_s,
                updated_at=now,
            )
            for job_id, value in zip(ids, values, strict=True)
        ]
        for start in range(0, len(jobs), _BULK_CHUNK):
            chunk = jobs[start : start + _BULK_CHUNK]
            records = [job.to_json() for job in chunk]  # serialised once: for the record and its dispatch
            revisions = await self._store.create_many(chunk, records)
            await self._dispatcher.dispatch_many(chunk, revisions, records)
            await self._announcer.bulk(NEW, chunk, revisions, "job.queued")
        return [job.id for job in jobs]

    def _payload_value(self, payload: Any) -> Any:
        try:
            if self._payload_adapter is not None:
                payload = self._payload_adapter.validate_python(payload)
                return self._payload_adapter.dump_python(payload, mode="json")
            return _ANY.dump_python(payload, mode="json")
        except ValidationError as exc:
            raise SerializationError(f"payload does not match the queue's payload type: {exc}") from exc
        except PydanticSerializationError as exc:
            raise SerializationError(f"payload is not JSON-serialisable: {exc}") from exc

    async def _redispatch_if_waiting(self, job: Job, revision: int) -> None:
        """Re-send a waiting job's dispatch (de-duplicated by the server) in case its submitter died."""
        if job.state is JobState.QUEUED and job.attempt == 0:
            await self._dispatcher.dispatch(job, revision)
        elif job.state is JobState.SCHEDULED and job.run_at is not None:
            await self._dispatcher.schedule_at(job, revision, job.run_at)

    async def _send(self, job: Job, revision: int, record: bytes | None = None) -> None:
        if job.state is JobState.SCHEDULED and job.run_at is not None:
            await self._dispatcher.schedule_at(job, revision, job.run_at)
        else:
            await self._dispatcher.dispatch(job, revision, record)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job's record, or None when there is no such job."""
        found = await self._store.get(validate_job_id(job_id))
        return found[0] if found is not None else None

    async def counts(self) -> JobCounts:
        """Jobs per state, from counters (constant cost however many jobs exist).

        This process's own transitions are counted before it returns; other processes'
        within a few milliseconds (their counter updates are confirmed in the background).
        """
        await self.flush()
        return await self._counters.counts()

    async def result(self, job_id: str) -> Any:
        """A completed job's result, fetched from the object store when it was stored there."""
        job = await self._require(job_id)
        if job.state is not JobState.COMPLETE:
            raise JobStateError(f"job {job_id} is {job.state.value}, not complete: it has no result")
        if job.result_ref is None:
            return job.result
        return await self._results.fetch(job_id, job.result_ref)

    async def _require(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise KeyNotFoundError(f"no job {job_id!r} in queue {self.name!r}")
        return job

    # -- the seed's worker side ------------------------------------------------------------

    async def claim(self, worker: str, *, lease_s: float | None = None) -> Job | None:
        """Take the oldest job queued for ``worker``; None when there is none now.

        The job stays held (its lease renewed in the background) until ``complete``, ``fail``
        or ``release``; if this process dies, it is redelivered after ``lease_s``.
        """
        validate_token(worker, "worker name")
        lease_time = lease_s or self.lease_s
        lock = self._claim_locks.setdefault(worker, asyncio.Lock())
        async with lock:
            while True:
                msg = await self._dispatcher.pull_one(worker, lease_time)
                if msg is None:
                    return None
                lease = await self._holder.claim(msg, lease_s=lease_time, default_max_attempts=self.max_attempts)
                if lease is not None:
                    return lease.job

    async def complete(self, job_id: str, result: Any = None) -> Job:
        """Record a running job's result (the seed: only from ``running``)."""
        lease = self._keeper.get(job_id)
        if lease is not None:
            return await self._holder.complete(lease, result)
        value, ref = await self._results.store(job_id, result)
        now = now_ms()
        before, job, revision = await self._update(
            job_id, lambda j: step.complete(_require_running(j, "complete"), result=value, result_ref=ref, now=now)
        )
        await self._announcer.transition(before.state.value, job, revision, "job.complete")
        return job

    async def fail(self, job_id: str, error: str, *, retry: bool = False) -> Job:
        """Fail a running job: finally (the seed), or with ``retry=True`` under the retry policy."""
        lease = self._keeper.get(job_id)
        if lease is not None:
            return await self._holder.fail(lease, error, self.backoff, retry=retry)
        now = now_ms()
        if not retry:
            before, job, revision = await self._update(
                job_id, lambda j: step.failed(_require_running(j, "fail"), error=error, now=now)
            )
            await self._announcer.transition(before.state.value, job, revision, "job.failed", error=error)
            return job

        # Held elsewhere: its message cannot be returned from here, so the job is re-dispatched
        # under a new generation (the held message becomes stale).
        def change(j: Job) -> Job:
            j = _require_running(j, "fail")
            if j.attempt >= (j.max_attempts or self.max_attempts):
                return step.dead(j, error=error, now=now)
            return step.redispatched(j.evolve(last_error=error), now=now)

        before, job, revision = await self._update(job_id, change)
        if job.state is JobState.DEAD:
            await self._announcer.transition(before.state.value, job, revision, "job.dead", error=error)
        else:
            await self._dispatcher.dispatch(job, revision)
            await self._announcer.transition(before.state.value, job, revision, "job.retrying", error=error, delay_s=0)
        return job

    async def release(self, job_id: str) -> Job:
        """Give back a job this process holds (via ``claim``) without using up its attempt."""
        lease = self._keeper.get(job_id)
        if lease is None:
            raise JobStateError(f"job {job_id} is not held by this process")
        return await self._holder.give_back(lease)

    async def heartbeat(self, job_id: str) -> None:
        """Renew the lease on a job this process holds now (leases are also renewed automatically)."""
        lease = self._keeper.get(job_id)
        if lease is None:
            raise JobStateError(f"job {job_id} is not held by this process")
        with translate_nats_errors(f"renew lease {job_id}"):
            await lease.msg.in_progress()

    async def progress(self, job_id: str, fraction: float, message: str | None = None) -> Job:
        """Record progress of a job this process holds (visible to ``get``, announced as ``job.progress``)."""
        lease = self._keeper.get(job_id)
        if lease is None:
            raise JobStateError(f"job {job_id} is not held by this process")
        return await self._holder.progress(lease, fraction, message)

    # -- operator actions ------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: a scheduled or queued one at once; a running one is asked to stop.

        A running job's worker sees the request (``ctx.cancelled``), its task is cancelled and
        the job ends ``cancelled``; if that worker is gone, the job is cancelled when its lease
        expires. Returns the record after the request.

        Raises:
            JobStateError: the job already finished.
        """
        now = now_ms()

        def change(job: Job) -> Job:
            if job.is_finished:
                raise JobStateError(f"job {job_id} already finished ({job.state.value}); nothing to cancel")
            if job.state is JobState.RUNNING:
                return job if job.cancel_requested else job.evolve(cancel_requested=True, updated_at=now)
            return step.cancelled(job, now=now)

        before, job, revision = await self._update(job_id, change)
        if job.state is JobState.CANCELLED:
            if before.state is JobState.SCHEDULED:
                await self._dispatcher.unschedule(job_id)
            await self._announcer.transition(before.state.value, job, revision, "job.cancelled")
        else:
            with translate_nats_errors(f"publish {self.layout.cancel_subject(job_id)}"):
                await self._manager.client.publish(self.layout.cancel_subject(job_id), b"")
            lease = self._keeper.get(job_id)
            if lease is not None:
                lease.signal("cancelled")
        return job

    async def retry(self, job_id: str) -> Job:
        """Requeue a failed, dead or cancelled job with fresh attempts (payload and last error kept)."""
        now = now_ms()

        def change(job: Job) -> Job:
            if job.state not in step.RETRYABLE:
                raise JobStateError(f"job {job_id} is {job.state.value}; only failed, dead or cancelled jobs retry")
            return step.requeued(job, now=now)

        before, job, revision = await self._update(job_id, change)
        await self._dispatcher.dispatch(job, revision)
        await self._announcer.transition(before.state.value, job, revision, "job.queued", retried=True)
        return job

    async def recount(self) -> JobCounts:
        """Scan every record and correct the counters to match (repairs drift after a crash)."""
        actual = dict.fromkeys(JobState, 0)
        async for job in self._store.scan():
            actual[job.state] += 1
        counted = (await self.counts()).as_dict()
        for state, value in actual.items():
            if value != counted[state.value]:
                await self._counters.bump(ADJUST, state.value, value - counted[state.value])  # awaited: exact
                log.warning("job.counts_repaired", state=state.value, counted=counted[state.value], actual=value)
        return JobCounts(**{state.value: value for state, value in actual.items()})

    # -- recurring schedules ---------------------------------------------------------------

    async def add_schedule(
        self,
        name: str,
        cron: str,
        worker: str,
        payload: P | None = None,
        *,
        queued_by: str = "",
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> Schedule:
        """Submit a job to ``worker`` on every tick of ``cron`` (see :mod:`shipkit.jobs.schedule`).

        The server fires the schedule (no process needs to be up); re-adding ``name`` replaces it.
        """
        validate_token(name, "schedule name")
        validate_token(worker, "worker name")
        expression = CronExpression.parse(cron)
        schedule = Schedule(
            name=name,
            cron=cron,
            worker=worker,
            payload=self._payload_value(payload),
            queued_by=queued_by,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
        )
        await self._dispatcher.set_cron(name, expression.to_nats(), worker, {"schedule": schedule.model_dump()})
        return schedule

    async def remove_schedule(self, name: str) -> bool:
        """Delete a recurring schedule; False when there was none."""
        return await self._dispatcher.remove_cron(name)

    async def schedules(self) -> builtins.list[Schedule]:
        """Every recurring schedule of this queue, by name."""
        found = []
        for body in await self._dispatcher.crons():
            try:
                found.append(Schedule.model_validate(body.get("schedule")))
            except ValidationError as exc:
                log.warning("job.schedule_undecodable", reason=str(exc)[:200])
        return found

    # -- helpers ---------------------------------------------------------------------------

    async def _update(self, job_id: str, change: Callable[[Job], Job]) -> tuple[Job, Job, int]:
        """Compare-and-set any job (not held here): ``(before, after, revision after)``."""
        validate_job_id(job_id)
        for _ in range(CAS_ATTEMPTS):
            found = await self._store.get(job_id)
            if found is None:
                raise KeyNotFoundError(f"no job {job_id!r} in queue {self.name!r}")
            job, revision = found
            new = change(job)
            if new is job:
                return job, job, revision
            try:
                return job, new, await self._store.cas(new, revision)
            except RevisionConflictError:
                continue
        raise RevisionConflictError(f"job {job_id}: the record kept changing")

    async def list(self, status: JobState | str | None = None, *, worker: str | None = None) -> builtins.list[Job]:
        """Jobs (all, or those in state ``status`` / for ``worker``), oldest id first.

        This reads every record once (one ordered consumer, no request per job); use
        ``counts()`` for numbers.
        """
        wanted = JobState(status) if status is not None else None
        jobs = [
            job
            async for job in self._store.scan()
            if (wanted is None or job.state is wanted) and (worker is None or job.worker == worker)
        ]
        jobs.sort(key=lambda job: (id_number(job.id), job.id))
        return jobs


def _require_running(job: Job, action: str) -> Job:
    if job.state is not JobState.RUNNING:
        raise JobStateError(f"cannot {action} job {job.id}: it is {job.state.value}, not running")
    return job


def _run_at_ms(delay_s: float | None, run_at: datetime | float | None) -> int | None:
    if delay_s is not None and run_at is not None:
        raise ConfigurationError("give delay_s or run_at, not both")
    if delay_s is not None:
        if delay_s < 0:
            raise ConfigurationError(f"delay_s must be >= 0, got {delay_s}")
        return now_ms() + int(delay_s * 1000)
    if run_at is None:
        return None
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ConfigurationError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        return int(run_at.astimezone(UTC).timestamp() * 1000)
    return int(float(run_at) * 1000)
