"""Holding jobs: claiming dispatch messages and settling held attempts: :class:`Holder`.

The runner's side of the queue, used by :class:`~shipkit.jobs.worker.JobWorker` and by
``JobQueue.claim``/``complete``/``fail``/``release``/``progress`` for jobs this process holds.
Every write here is a compare-and-set by the holder; a settlement fixes its timestamps up front
so a retried call (after a lost answer) writes the same record and finishes what it started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

import shipkit.jobs._transitions as step
from shipkit._publish import PipelinedPublisher
from shipkit.errors import (
    ConfigurationError,
    LeaseLostError,
    RevisionConflictError,
    SerializationError,
    translate_nats_errors,
)
from shipkit.jobs._dispatch_stream import DispatchBody
from shipkit.jobs._events import Announcer
from shipkit.jobs._ids import IdAllocator
from shipkit.jobs._lease import Lease, LeaseKeeper
from shipkit.jobs._progress import ProgressCoalescer
from shipkit.jobs._results import ResultStore
from shipkit.jobs._retention import Retention
from shipkit.jobs._settle import Settlement, settle
from shipkit.jobs._store import NEW, JobStore
from shipkit.jobs.models import Backoff, Job, JobState, now_ms
from shipkit.jobs.schedule import Schedule
from shipkit.logging import get_logger

log = get_logger(__name__)

_ANNOUNCED_MAX = 10_000


class Holder:
    """Claims and settles jobs on behalf of this process (``instance_id``)."""

    def __init__(
        self,
        *,
        store: JobStore,
        ids: IdAllocator,
        results: ResultStore,
        announcer: Announcer,
        keeper: LeaseKeeper,
        publisher: PipelinedPublisher,
        instance_id: str,
        default_max_attempts: int,
        queue_name: str = "",
        retention: Retention | None = None,
        default_retention_s: float | None = None,
        progress_interval_s: float = 0.25,
    ) -> None:
        self.queue_name = queue_name
        self._progress = ProgressCoalescer(self._write_progress, progress_interval_s)
        self._retention = retention
        self._default_retention_s = default_retention_s
        self._store = store
        self._ids = ids
        self._results = results
        self._announcer = announcer
        self._keeper = keeper
        self._publisher = publisher
        self.instance_id = instance_id
        self.default_max_attempts = default_max_attempts
        # Claims (job id, attempt, dispatch message) this process announced and has not settled
        # yet, so a claim resumed after a lost settlement is not counted twice.
        self._announced: dict[tuple[str, int, int | None], None] = {}

    def _remember_announced(self, key: tuple[str, int, int | None]) -> None:
        self._announced[key] = None
        while len(self._announced) > _ANNOUNCED_MAX:  # leases lost elsewhere are never settled here
            del self._announced[next(iter(self._announced))]

    async def claim(self, msg: Msg, *, lease_s: float, default_max_attempts: int) -> Lease | None:
        """Turn a dispatch message into a held job, or settle it when it is stale; None if not held."""
        try:
            body = DispatchBody.decode(msg.data)
            if body.cron is not None:
                made, made_revision = await self._materialize(body.cron, msg)
                body = DispatchBody(made.id, made.dispatch, made_revision, made, None)
        except (SerializationError, ValidationError, TypeError, ValueError) as exc:
            log.warning("job.dispatch_undecodable", subject=msg.subject, reason=str(exc)[:200])
            await settle(msg, Settlement.TERM, self._publisher)
            return None
        if body.job_id is None:  # pragma: no cover - decode() returns an id or a schedule
            return None
        seq = msg.metadata.sequence.stream
        redelivered = msg.metadata.num_delivered > 1
        now = now_ms()

        def claim(job: Job) -> Job | None:
            return step.claim(
                job,
                dispatch=body.dispatch,
                dispatch_seq=seq,
                redelivered=redelivered,
                owner=self.instance_id,
                default_max_attempts=default_max_attempts,
                now=now,
            )

        known = (body.job, body.revision) if body.job is not None and body.revision is not None else None
        written = await self._store.update(body.job_id, claim, known=known)
        if written is None:
            log.warning("job.dispatch_orphan", job_id=body.job_id, subject=msg.subject)
            await settle(msg, Settlement.TERM, self._publisher)
            return None
        job = written.after
        if job is None:  # stale: finished, superseded, or a duplicate of a held job
            await settle(msg, Settlement.ACK, self._publisher)
            return None
        if written.changed:
            return await self._claimed(written.before.state, job, written.revision, msg, lease_s)
        # Our own earlier claim of this message landed: resume it.
        held = self._keeper.get(job.id)
        if held is not None and held.job.dispatch_seq == seq:
            return None  # a redelivery of a message this process is already running
        return await self._claimed(job.claimed_from or JobState.QUEUED, job, written.revision, msg, lease_s)

    async def _claimed(self, before: JobState, job: Job, revision: int, msg: Msg, lease_s: float) -> Lease | None:
        """Hold a job just claimed (or settle the message of a job the claim ended)."""
        if job.state is JobState.RUNNING:
            lease = Lease(job=job, revision=revision, msg=msg, owner=self.instance_id, lease_s=lease_s)
            self._keeper.add(lease)
            key = _claim_key(job)
            if key in self._announced:
                # Resuming a claim this process announced already (its settlement never got
                # through, so the message came back): counting it again would skew the counts.
                return lease
            self._remember_announced(key)
            takeover = before is JobState.RUNNING
            await self._announcer.transition(before.value, job, revision, "job.running", takeover=takeover)
            return lease
        await settle(msg, Settlement.TERM if job.state is JobState.DEAD else Settlement.ACK, self._publisher)
        event = "job.dead" if job.state is JobState.DEAD else "job.cancelled"
        await self._announcer.transition(before.value, job, revision, event, error=job.error)
        if self._retention is not None:
            await self._retention.schedule(job, revision, job.retention_s or self._default_retention_s)
        return None

    async def _materialize(self, schedule: dict[str, Any], msg: Msg) -> tuple[Job, int]:
        """The job of one schedule firing, created once however often the firing is delivered."""
        spec = Schedule.model_validate(schedule)
        key = f"schedule:{spec.name}:{msg.metadata.sequence.stream}"
        job_id = await self._ids.for_key(key)
        found = await self._store.get(job_id)
        if found is not None:
            return found
        now = now_ms()
        job = Job(
            id=job_id,
            payload=spec.payload,
            worker=spec.worker,
            queued_by=spec.queued_by or f"schedule:{spec.name}",
            queued_at=now,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            idempotency_key=key,
            schedule=spec.name,
            updated_at=now,
        )
        try:
            revision = await self._store.create(job)
        except RevisionConflictError:
            found = await self._store.get(job_id)
            if found is None:
                raise
            return found
        await self._announcer.transition(NEW, job, revision, "job.queued", queued_by=job.queued_by, schedule=spec.name)
        return job, revision

    async def write(self, lease: Lease, change: Callable[[Job], Job]) -> Job:
        """Compare-and-set a held job; on a conflict re-read and re-apply while it is still ours."""

        def still_ours(job: Job) -> Job:
            if job is not lease.job and not lease.owns(job):
                raise LeaseLostError(f"job {lease.job.id}: attempt {lease.attempt} is no longer held here")
            return change(job)

        try:
            written = await self._store.update(lease.job.id, still_ours, known=(lease.job, lease.revision))
        except LeaseLostError:
            self._lose(lease)
            raise
        if written is None or written.after is None:
            self._lose(lease)
            raise LeaseLostError(f"job {lease.job.id}: attempt {lease.attempt} is no longer held here")
        lease.job, lease.revision = written.after, written.revision
        return written.after

    def forget(self, lease: Lease) -> None:
        """Drop a lease's pending progress (its job is no longer held here)."""
        self._progress.forget(lease)

    def _lose(self, lease: Lease) -> None:
        self._progress.forget(lease)
        self._keeper.discard(lease)
        self._announced.pop(_claim_key(lease.job), None)
        lease.signal("lost")

    async def _finish(
        self,
        lease: Lease,
        change: Callable[[Job], Job],
        event: str,
        ack: Settlement,
        *,
        nak_delay_s: float = 0.0,
        **extra: Any,
    ) -> Job:
        if lease.settled == event:  # an earlier try of this settlement wrote it: finish the rest
            job = lease.job
        elif lease.job.state is not JobState.RUNNING or lease.settled is not None:
            raise LeaseLostError(f"job {lease.job.id}: attempt {lease.attempt} was already settled here")
        else:
            await self._progress.settle(lease)  # the last progress report is stored before the outcome
            claim = _claim_key(lease.job)
            job = await self.write(lease, change)
            lease.settled = event
            self._keeper.discard(lease)
            self._announced.pop(claim, None)
        await settle(lease.msg, ack, self._publisher, nak_delay_s)
        await self._announcer.transition(JobState.RUNNING.value, job, lease.revision, event, **extra)
        if self._retention is not None and job.is_finished:
            retention_s = job.retention_s or lease.retention_s or self._default_retention_s
            await self._retention.schedule(job, lease.revision, retention_s)
        return job

    async def complete(self, lease: Lease, result: Any, *, now: int | None = None) -> Job:
        value, ref = await self._results.store(lease.job.id, result)
        at = now or now_ms()
        return await self._finish(
            lease, lambda j: step.complete(j, result=value, result_ref=ref, now=at), "job.complete", Settlement.ACK
        )

    async def fail(
        self,
        lease: Lease,
        error: str,
        backoff: Backoff,
        *,
        retry: bool = True,
        now: int | None = None,
        delay_s: float | None = None,
        traceback: str | None = None,
    ) -> Job:
        """Fail the held attempt: finally, or retry after ``delay_s`` (default: from ``backoff``) or dead.

        ``now`` and ``delay_s`` fixed by the caller make a retried call write the same record;
        ``traceback`` (short) is kept in the record as ``last_traceback``.
        """
        at = now or now_ms()
        if not retry:
            return await self._finish(
                lease,
                lambda j: step.failed(j, error=error, now=at, traceback=traceback),
                "job.failed",
                Settlement.TERM,
                error=error,
            )
        if step.exhausted(lease.job, self.default_max_attempts):
            return await self.dead(lease, error, now=at, traceback=traceback)
        delay = backoff.delay_s(lease.job.attempt) if delay_s is None else delay_s
        return await self._finish(
            lease,
            lambda j: step.retry_later(j, error=error, delay_s=delay, now=at, traceback=traceback),
            "job.retrying",
            Settlement.NAK,
            nak_delay_s=delay,
            error=error,
            delay_s=round(delay, 3),
        )

    async def dead(self, lease: Lease, error: str, *, now: int | None = None, traceback: str | None = None) -> Job:
        at = now or now_ms()
        return await self._finish(
            lease,
            lambda j: step.dead(j, error=error, now=at, traceback=traceback),
            "job.dead",
            Settlement.TERM,
            error=error,
        )

    async def cancelled(self, lease: Lease, *, now: int | None = None) -> Job:
        at = now or now_ms()
        return await self._finish(lease, lambda j: step.cancelled(j, now=at), "job.cancelled", Settlement.ACK)

    async def give_back(self, lease: Lease, *, now: int | None = None) -> Job:
        at = now or now_ms()
        job = await self._finish(
            lease, lambda j: step.given_back(j, now=at), "job.queued", Settlement.NAK, reason="given back"
        )
        lease.signal("lost")  # a handler still running it (release() of a worker's job) must stop
        return job

    async def progress(self, lease: Lease, fraction: float, message: str | None) -> Job:
        """Report progress: written now, or (inside the coalescing interval) soon; the last one always."""
        if not 0.0 <= fraction <= 1.0:
            raise ConfigurationError(f"progress must be between 0 and 1, got {fraction}")
        if lease.cancel_reason == "lost":
            raise LeaseLostError(f"job {lease.job.id}: attempt {lease.attempt} is no longer held here")
        await self._progress.report(lease, fraction, message)
        return lease.job

    async def _write_progress(self, lease: Lease, fraction: float, message: str | None) -> Job:
        now = now_ms()
        job = await self.write(lease, lambda j: step.progressed(j, fraction=fraction, message=message, now=now))
        await self.heartbeat(lease)
        await self._announcer.transition(
            JobState.RUNNING.value, job, lease.revision, "job.progress", progress=fraction, message=message
        )
        return job

    async def checkpoint(self, lease: Lease, state: Any) -> Job:
        """Store ``state`` with the held job (large ones in the object store) for the next attempt."""
        value, ref = await self._results.store(lease.job.id, state, name=f"{lease.job.id}.checkpoint")
        now = now_ms()
        job = await self.write(lease, lambda j: step.checkpointed(j, state=value, state_ref=ref, now=now))
        await self.heartbeat(lease)
        return job

    async def resume_state(self, job: Job) -> Any:
        """The checkpoint ``job`` carries (fetched when stored by reference), or None."""
        if job.checkpoint_ref is not None:
            return await self._results.fetch(job.id, job.checkpoint_ref)
        return job.checkpoint

    async def heartbeat(self, lease: Lease) -> None:
        """Renew the lease now (the server restarts the message's ``ack_wait`` clock)."""
        with translate_nats_errors(f"renew lease {lease.job.id}"):
            await lease.msg.in_progress()


def _claim_key(job: Job) -> tuple[str, int, int | None]:
    """What identifies one claim of a running record while the holder writes progress to it."""
    return (job.id, job.attempt, job.dispatch_seq)
