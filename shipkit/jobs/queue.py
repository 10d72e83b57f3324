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

This module is the public facade: it validates arguments and delegates to the queue's one
:class:`~shipkit.jobs._engine.JobEngine`, which wires the machinery of the private modules
(``_store``, ``_dispatch_stream``, ``_holder``, ``_lease``, ``_events``, ``_results``,
``_retention``, ``_registry``, ``_watch``).

Over 450 lines on purpose: this is the queue's whole public API in one place (each method a
docstring, argument checks and one call into the engine); splitting it would scatter what a
reader looks up together.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from shipkit._names import validate_subject, validate_token
from shipkit.config import NatsConfig, StorageType, StreamConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import ConfigurationError, JobStateError, KeyNotFoundError, SerializationError
from shipkit.jobs._engine import JobEngine
from shipkit.jobs._ids import id_number, validate_job_id
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._lease import Lease
from shipkit.jobs._watch import wait_finished
from shipkit.jobs.handle import JobHandle
from shipkit.jobs.models import (
    FINISHED_STATES,
    PRIORITIES,
    Backoff,
    Job,
    JobCounts,
    JobState,
    Priority,
    WorkerInfo,
    now_ms,
)
from shipkit.jobs.schedule import CronExpression, Schedule
from shipkit.logging import get_logger

__all__ = ["JobQueue"]

log = get_logger(__name__)

P = TypeVar("P")

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class JobQueue(Generic[P], ConnectionOwner):
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
        retention_s: finished jobs are deleted this long after they end, unless the job or its
            worker says otherwise (None: kept until purged). Expiry runs in the processes that
            run a :class:`JobWorker` of the queue.
        progress_interval_s: a running job's progress is written at most this often (the last
            report always; 0: every report).
        progress_events: publish ``job.progress`` events (the record is updated either way).
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
        retention_s: float | None = None,
        progress_interval_s: float = 0.25,
        progress_events: bool = True,
    ) -> None:
        if progress_interval_s < 0:
            raise ConfigurationError(f"JobQueue: progress_interval_s must be >= 0, got {progress_interval_s}")
        if retention_s is not None and retention_s <= 0:
            raise ConfigurationError(f"JobQueue: retention_s must be > 0, got {retention_s}")
        if lease_s <= 0 or max_attempts < 1 or result_inline_max_bytes < 0:
            raise ConfigurationError("JobQueue: lease_s must be > 0, max_attempts >= 1, result_inline_max_bytes >= 0")
        validate_subject(event_prefix, "event prefix")
        super().__init__(connection)
        self.layout = QueueLayout.build(name, prefix, subject_prefix, storage=storage, replicas=replicas)
        self._payload_adapter: TypeAdapter[P] | None = TypeAdapter(payload_type) if payload_type else None
        self.lease_s = lease_s
        self.engine = JobEngine(
            self.connection,
            self.layout,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            events=StreamConfig.event_bus(event_stream, event_prefix) if events else None,
            event_prefix=event_prefix,
            source=source,
            result_inline_max_bytes=result_inline_max_bytes,
            retention_s=retention_s,
            progress_interval_s=progress_interval_s,
            progress_events=progress_events,
        )
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.layout.name

    @property
    def max_attempts(self) -> int:
        """Attempts a job gets when neither it nor its worker says otherwise."""
        return self.engine.max_attempts

    @property
    def backoff(self) -> Backoff:
        """Delays between attempts when neither the worker nor ``fail`` says otherwise."""
        return self.engine.backoff

    @property
    def instance_id(self) -> str:
        """This process's identity as a job holder (``claimed_by`` of the jobs it runs)."""
        return self.engine.instance_id

    async def _setup(self) -> None:
        """Provision the queue's streams and buckets (once, however often ``connect`` is called)."""
        if not self._started:
            await self.engine.start()
            self._started = True

    async def _teardown(self) -> None:
        """Give back jobs still held through ``claim``, stop renewing leases, drain counters and events."""
        self._started = False
        await self.engine.stop()

    async def flush(self) -> None:
        """Wait until this process's counter updates and events are confirmed by the server."""
        await self.engine.flush()

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
        priority: Priority = "normal",
        retention_s: float | None = None,
    ) -> JobHandle:
        """Queue a job for ``worker`` and return its id as a :class:`JobHandle` (a ``str``).

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
            priority: ``high``, ``normal`` or ``low``; workers take higher ones first.
            retention_s: delete the job this long after it ends (default: the worker's, else the queue's).

        Raises:
            SerializationError: the payload is not JSON-able, does not match ``payload_type``, or
                does not match the schema the running workers of ``worker`` advertise (nothing
                is queued then). With no worker serving ``worker`` it is queued and a warning logged.
        """
        validate_token(worker, "worker name")
        _check_priority(priority)
        value = self._payload_value(payload)
        await self.engine.registry.check_payload(worker, value)
        run_at_ms = _run_at_ms(delay_s, run_at)
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")

        def build(job_id: str, now: int) -> Job:
            scheduled = run_at_ms is not None and run_at_ms > now
            return Job(
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
                priority=priority,
                retention_s=retention_s,
                updated_at=now,
            )

        return JobHandle(await self.engine.submit(build, idempotency_key), self)

    async def submit_many(
        self,
        payloads: Iterable[P],
        worker: str,
        queued_by: str = "",
        *,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        priority: Priority = "normal",
    ) -> builtins.list[str]:
        """Queue many jobs for ``worker`` at once (one id reservation, pipelined writes); return their ids."""
        validate_token(worker, "worker name")
        _check_priority(priority)
        values = [self._payload_value(p) for p in payloads]
        if not values:
            return []
        for value in values:
            await self.engine.registry.check_payload(worker, value)

        def build(ids: builtins.list[str], now: int) -> builtins.list[Job]:
            return [
                Job(
                    id=job_id,
                    payload=value,
                    worker=worker,
                    queued_by=queued_by,
                    queued_at=now,
                    max_attempts=max_attempts,
                    timeout_s=timeout_s,
                    priority=priority,
                    updated_at=now,
                )
                for job_id, value in zip(ids, values, strict=True)
            ]

        return await self.engine.submit_many(len(values), build)

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

    # -- reading ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job's record, or None when there is no such job."""
        found = await self.engine.store.get(validate_job_id(job_id))
        return found[0] if found is not None else None

    async def counts(self) -> JobCounts:
        """Jobs per state, from counters (constant cost however many jobs exist).

        This process's own transitions are counted before it returns; other processes'
        within a few milliseconds (their counter updates are confirmed in the background).
        """
        await self.flush()
        return await self.engine.counters.counts()

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """The job's record once it is complete, failed, dead or cancelled (a watch, no polling).

        Raises:
            KeyNotFoundError: there is no such job.
            NatsTimeoutError: it did not finish within ``timeout_s`` (None: no limit).
        """
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        return await wait_finished(self.connection, self.layout, self.engine.store, validate_job_id(job_id), timeout_s)

    async def result(self, job_id: str) -> Any:
        """A completed job's result, fetched from the object store when it was stored there."""
        return await self.result_of(await self._require(job_id))

    async def result_of(self, job: Job) -> Any:
        """The result of the record ``job`` (as ``wait`` returned it), from the object store if stored there."""
        if job.state is not JobState.COMPLETE:
            why = f" ({job.error})" if job.error else ""
            raise JobStateError(f"job {job.id} is {job.state.value}, not complete: it has no result{why}")
        if job.result_ref is None:
            return job.result
        return await self.engine.results.fetch(job.id, job.result_ref)

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
        return await self.engine.claim(worker, lease_s or self.lease_s)

    async def complete(self, job_id: str, result: Any = None) -> Job:
        """Record a running job's result (the seed: only from ``running``)."""
        lease = self.engine.leases.get(job_id)
        if lease is not None:
            return await self.engine.holder.complete(lease, result)
        return await self.engine.complete_elsewhere(job_id, result)

    async def fail(self, job_id: str, error: str, *, retry: bool = False) -> Job:
        """Fail a running job: finally (the seed), or with ``retry=True`` under the retry policy.

        A job held by another process cannot have its message returned from here: a retry
        re-dispatches it under a new generation (the held message becomes stale).
        """
        lease = self.engine.leases.get(job_id)
        if lease is not None:
            return await self.engine.holder.fail(lease, error, self.backoff, retry=retry)
        return await self.engine.fail_elsewhere(job_id, error, retry=retry)

    async def release(self, job_id: str) -> Job:
        """Give back a job this process holds (via ``claim``) without using up its attempt."""
        return await self.engine.holder.give_back(self._held(job_id))

    async def heartbeat(self, job_id: str) -> None:
        """Renew the lease on a job this process holds now (leases are also renewed automatically)."""
        await self.engine.holder.heartbeat(self._held(job_id))

    async def progress(self, job_id: str, fraction: float, message: str | None = None) -> Job:
        """Record progress of a job this process holds (visible to ``get``, announced as ``job.progress``)."""
        return await self.engine.holder.progress(self._held(job_id), fraction, message)

    def _held(self, job_id: str) -> Lease:
        lease = self.engine.leases.get(job_id)
        if lease is None:
            raise JobStateError(f"job {job_id} is not held by this process")
        return lease

    # -- operator actions ------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: a scheduled or queued one at once; a running one is asked to stop.

        A running job's worker sees the request (``ctx.cancelled``), its task is cancelled and
        the job ends ``cancelled``; if that worker is gone, the job is cancelled when its lease
        expires. Returns the record after the request.

        Raises:
            JobStateError: the job already finished.
        """
        return await self.engine.cancel(job_id)

    async def retry(self, job_id: str) -> Job:
        """Requeue a failed, dead or cancelled job with fresh attempts (payload and last error kept)."""
        return await self.engine.retry(job_id)

    async def recount(self) -> JobCounts:
        """Scan every record and correct the counters to match (repairs drift after a crash)."""
        return await self.engine.recount(await self.counts())

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
        await self.engine.dispatch.set_cron(name, expression.to_nats(), worker, {"schedule": schedule.model_dump()})
        return schedule

    async def remove_schedule(self, name: str) -> bool:
        """Delete a recurring schedule; False when there was none."""
        return await self.engine.dispatch.remove_cron(name)

    async def schedules(self) -> builtins.list[Schedule]:
        """Every recurring schedule of this queue, by name."""
        found = []
        for body in await self.engine.dispatch.crons():
            try:
                found.append(Schedule.model_validate(body.get("schedule")))
            except ValidationError as exc:
                log.warning("job.schedule_undecodable", reason=str(exc)[:200])
        return found

    async def workers(self, worker: str = "*") -> builtins.list[WorkerInfo]:
        """The running worker instances of this queue (of ``worker`` only, if given)."""
        if worker != "*":
            validate_token(worker, "worker name")
        return await self.engine.registry.workers(worker)

    async def purge(
        self,
        *,
        state: JobState | str | None = None,
        older_than_s: float | None = None,
        worker: str | None = None,
    ) -> int:
        """Delete finished jobs now (all final states, or ``state``), their results and checkpoints with them.

        Only complete, failed, dead and cancelled jobs are deleted; ``older_than_s`` keeps those
        that ended more recently; ``counts()`` stays exact (each deletion is counted). Reads every
        record once. Returns how many jobs were deleted.
        """
        if state is not None and JobState(state) not in FINISHED_STATES:
            raise ConfigurationError(f"only finished jobs can be purged, not {JobState(state).value!r} ones")
        if older_than_s is not None and older_than_s < 0:
            raise ConfigurationError(f"older_than_s must be >= 0, got {older_than_s}")
        states = frozenset({JobState(state)}) if state is not None else FINISHED_STATES
        jobs = [job async for job in self.engine.store.scan()]
        older_than_ms = None if older_than_s is None else int(older_than_s * 1000)
        return await self.engine.retention.purge(states=states, older_than_ms=older_than_ms, worker=worker, jobs=jobs)

    async def delete(self, job_id: str) -> bool:
        """Delete one finished job now, with its result and checkpoint; ``counts()`` stays exact.

        Returns False when the job was deleted meanwhile (or expired).

        Raises:
            KeyNotFoundError: no job with that id.
            JobStateError: the job has not finished (cancel it first).
        """
        job = await self.get(job_id)
        if job is None:
            raise KeyNotFoundError(f"no job {job_id!r} in queue {self.name!r}")
        if job.state not in FINISHED_STATES:
            raise JobStateError(f"job {job_id} is {job.state.value}: only finished jobs can be deleted")
        deleted = await self.engine.retention.purge(states=FINISHED_STATES, older_than_ms=None, worker=None, jobs=[job])
        return deleted == 1

    async def list(self, status: JobState | str | None = None, *, worker: str | None = None) -> builtins.list[Job]:
        """Jobs (all, or those in state ``status`` / for ``worker``), oldest id first.

        This reads every record once (one ordered consumer, no request per job); use
        ``counts()`` for numbers.
        """
        wanted = JobState(status) if status is not None else None
        jobs = [
            job
            async for job in self.engine.store.scan()
            if (wanted is None or job.state is wanted) and (worker is None or job.worker == worker)
        ]
        jobs.sort(key=lambda job: (id_number(job.id), job.id))
        return jobs


def _check_priority(priority: str) -> None:
    if priority not in PRIORITIES:
        raise ConfigurationError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")


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
