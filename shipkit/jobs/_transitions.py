"""The state machine as pure functions: each takes a record and returns the next one.

No I/O here: the engine applies the result with a compare-and-set and announces it. Timestamps
are passed in, so a retried compare-and-set writes exactly the same record. A transition an
operation does not allow in the record's state raises :class:`JobStateError`::

    (submit) -> scheduled -> queued -> running -> complete
                     \\          ^   \\   |  \\-> queued (retry after backoff / given back)
                      \\         |    \\  |-> failed | dead | cancelled
                       \\-> cancelled  \\-> cancelled      (retry: failed|dead|cancelled -> queued)
"""

from __future__ import annotations

from typing import Any

from shipkit.errors import JobStateError
from shipkit.jobs.models import Job, JobState, ResultRef

CLAIMABLE = frozenset({JobState.SCHEDULED, JobState.QUEUED})
RETRYABLE = frozenset({JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


def start(
    job: Job,
    *,
    owner: str,
    default_max_attempts: int,
    now: int,
    dispatch_seq: int | None = None,
    last_error: str | None = None,
) -> Job:
    """Begin the next attempt (``running``), held by ``owner``, from message ``dispatch_seq``."""
    return job.evolve(
        dispatch_seq=dispatch_seq,
        claimed_from=job.state,
        state=JobState.RUNNING,
        attempt=job.attempt + 1,
        max_attempts=job.max_attempts or default_max_attempts,
        started_at=now,
        claimed_by=owner,
        progress=None,
        progress_message=None,
        run_at=None,
        last_error=last_error if last_error is not None else job.last_error,
        updated_at=now,
    )


def claim(
    job: Job,
    *,
    dispatch: int,
    dispatch_seq: int,
    redelivered: bool,
    owner: str,
    default_max_attempts: int,
    now: int,
) -> Job | None:
    """What a dispatch message does to the record it points at; None means drop the message.

    A message of an older dispatch generation, or for a finished job, is stale. A ``running``
    job is only taken over on a *redelivery*: the holder stopped renewing its lease. If the
    record shows that ``owner`` already claimed this very message (a retried claim whose first
    write landed), the record is returned unchanged: the claim resumes.
    """
    if job.dispatch != dispatch or job.is_finished:
        return None
    if job.state in CLAIMABLE:
        return start(job, owner=owner, default_max_attempts=default_max_attempts, now=now, dispatch_seq=dispatch_seq)
    if job.claimed_by == owner and job.dispatch_seq == dispatch_seq:
        return job
    if not redelivered:  # a duplicate dispatch of a job someone holds
        return None
    lost = f"lease expired: worker {job.claimed_by} stopped renewing it during attempt {job.attempt}"
    if job.cancel_requested:
        return cancelled(job, now=now)
    if exhausted(job, default_max_attempts):
        return dead(job, error=lost, now=now)
    return start(
        job, owner=owner, default_max_attempts=default_max_attempts, now=now, dispatch_seq=dispatch_seq, last_error=lost
    )


def exhausted(job: Job, default_max_attempts: int) -> bool:
    """True when the job's current attempt is its last one."""
    return job.attempt >= (job.max_attempts or default_max_attempts)


def require_running(job: Job, action: str) -> Job:
    """``job`` itself if it is running; else :class:`JobStateError` (``action``: what was refused)."""
    if job.state is not JobState.RUNNING:
        raise JobStateError(f"cannot {action} job {job.id}: it is {job.state.value}, not running")
    return job


def progressed(job: Job, *, fraction: float, message: str | None, now: int) -> Job:
    """The holder reports progress on its running attempt."""
    return job.evolve(progress=fraction, progress_message=message, updated_at=now)


def checkpointed(job: Job, *, state: Any, state_ref: ResultRef | None, now: int) -> Job:
    """The holder stored a checkpoint: the next attempt resumes from it (kept by every later transition)."""
    return job.evolve(checkpoint=state, checkpoint_ref=state_ref, updated_at=now)


def complete(job: Job, *, result: Any, result_ref: ResultRef | None, now: int) -> Job:
    """The attempt succeeded."""
    return job.evolve(
        state=JobState.COMPLETE, result=result, result_ref=result_ref, error=None, completed_at=now, updated_at=now
    )


def failed(job: Job, *, error: str, now: int, traceback: str | None = None) -> Job:
    """Final failure without retry (the seed's ``fail``)."""
    return job.evolve(
        state=JobState.FAILED,
        error=error,
        last_error=error,
        last_traceback=traceback or job.last_traceback,
        completed_at=now,
        updated_at=now,
    )


def dead(job: Job, *, error: str, now: int, traceback: str | None = None) -> Job:
    """Retries exhausted or pointless (bad payload): dead-lettered, payload and error kept."""
    return job.evolve(
        state=JobState.DEAD,
        error=error,
        last_error=error,
        last_traceback=traceback or job.last_traceback,
        completed_at=now,
        updated_at=now,
    )


def retry_later(job: Job, *, error: str, delay_s: float, now: int, traceback: str | None = None) -> Job:
    """A failed attempt with attempts left: queued again, eligible after the backoff."""
    return job.evolve(
        state=JobState.QUEUED,
        last_error=error,
        last_traceback=traceback or job.last_traceback,
        run_at=now + int(delay_s * 1000),
        claimed_by=None,
        updated_at=now,
    )


def cancelled(job: Job, *, now: int) -> Job:
    """Cancelled (queued jobs at once, running ones when their worker stops them)."""
    return job.evolve(
        state=JobState.CANCELLED, cancel_requested=True, error="cancelled", completed_at=now, updated_at=now
    )


def given_back(job: Job, *, now: int) -> Job:
    """A worker shutting down returns the job; the interrupted attempt is not counted."""
    return job.evolve(
        state=JobState.QUEUED,
        attempt=max(job.attempt - 1, 0),
        claimed_by=None,
        progress=None,
        progress_message=None,  # the next attempt starts over; a stale message would mislead
        updated_at=now,
    )


def cancel_requested(job: Job, *, now: int) -> Job:
    """An operator's cancel: waiting jobs are cancelled at once, a running one is flagged for its holder."""
    if job.is_finished:
        raise JobStateError(f"job {job.id} already finished ({job.state.value}); nothing to cancel")
    if job.state is JobState.RUNNING:
        return job if job.cancel_requested else job.evolve(cancel_requested=True, updated_at=now)
    return cancelled(job, now=now)


def failed_elsewhere(job: Job, *, error: str, default_max_attempts: int, now: int) -> Job:
    """A retryable failure reported for a job held by another process: dead, or re-dispatched.

    Its held message cannot be returned from here, so the job goes back to ``queued`` under a
    new dispatch generation (the held message becomes stale).
    """
    require_running(job, "fail")
    if exhausted(job, default_max_attempts):
        return dead(job, error=error, now=now)
    return redispatched(job.evolve(last_error=error), now=now)


def requeued(job: Job, *, now: int) -> Job:
    """A finished failure requeued by hand: fresh attempts, new dispatch generation, last error kept."""
    if job.state not in RETRYABLE:
        raise JobStateError(f"job {job.id} is {job.state.value}; only failed, dead or cancelled jobs retry")
    return job.evolve(
        state=JobState.QUEUED,
        attempt=0,
        dispatch=job.dispatch + 1,
        error=None,
        result=None,
        result_ref=None,
        completed_at=None,
        started_at=None,
        cancel_requested=False,
        claimed_by=None,
        run_at=None,
        progress=None,
        progress_message=None,
        updated_at=now,
    )


def redispatched(job: Job, *, now: int) -> Job:
    """Back to ``queued`` under a new dispatch generation (when no held message can be returned)."""
    return job.evolve(state=JobState.QUEUED, dispatch=job.dispatch + 1, claimed_by=None, updated_at=now)


def owned_by(job: Job, owner: str, attempt: int) -> bool:
    """True while ``owner`` still holds attempt ``attempt`` of a running job."""
    return job.state is JobState.RUNNING and job.claimed_by == owner and job.attempt == attempt
