"""The job record and the small value types around it: :class:`Job`, :class:`JobState`,
:class:`Backoff`, :class:`JobCounts`, :class:`ResultRef`.

A job's JSON keeps the noesis-ship fields first, in the contract's order (wire contract §3:
``id, payload, status, worker, queued_by, queued_at, started_at, completed_at, result, error``),
so a reader that knows only those still reads it; shipkit's lifecycle fields follow.

``status`` stays within the seed's four values (``queued|running|complete|failed``) because a
seed reader (a Rust enum) rejects anything else; the full lifecycle state is the added field
``state``::

    state       scheduled  queued  running  complete  failed  cancelled  dead
    status      queued     queued  running  complete  failed  failed     failed
"""

from __future__ import annotations

import enum
import functools
import operator
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipkit.errors import SerializationError

__all__ = [
    "FINISHED_STATES",
    "MAX_PRIORITY_LEVELS",
    "MIN_PRIORITY_LEVELS",
    "PRIORITIES",
    "Backoff",
    "Job",
    "JobCounts",
    "JobState",
    "Priority",
    "ResultRef",
    "SeedStatus",
    "WorkerInfo",
    "now_ms",
    "served_priorities",
]

SeedStatus = Literal["queued", "running", "complete", "failed"]

Priority = Literal["low", "normal", "high"]
"""A job's priority: every worker serving several levels takes ``high`` before ``normal`` before ``low``."""

PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
"""The levels, highest first."""

MIN_PRIORITY_LEVELS = 1  # a worker serving only ``normal`` (one consumer: the fastest path)
MAX_PRIORITY_LEVELS = len(PRIORITIES)


def served_priorities(levels: int) -> tuple[Priority, ...]:
    """The priorities a worker with ``levels`` levels serves, highest first (1: normal; 2: +high; 3: +low)."""
    served: dict[int, tuple[Priority, ...]] = {1: ("normal",), 2: ("high", "normal")}
    return served.get(levels, PRIORITIES)


def now_ms() -> int:
    """Unix time in milliseconds (the seed's timestamp unit)."""
    return time.time_ns() // 1_000_000


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle.

    ``scheduled`` waits for its ``run_at`` (not yet dispatched); ``queued`` waits for a worker
    (including a retry waiting out its backoff); ``running`` is held by one worker; the other
    four are final (``retry`` can requeue ``failed``, ``cancelled`` and ``dead`` jobs).
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def seed_status(self) -> SeedStatus:
        """The noesis-ship status a seed reader sees for this state."""
        return _SEED_STATUS[self]

    @property
    def is_finished(self) -> bool:
        """True for the final states (complete, failed, cancelled, dead)."""
        return self in FINISHED_STATES


_SEED_STATUS: dict[JobState, SeedStatus] = {
    JobState.SCHEDULED: "queued",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.COMPLETE: "complete",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
    JobState.DEAD: "failed",
}

FINISHED_STATES = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED, JobState.DEAD})


class ResultRef(BaseModel):
    """Where a result too large to store inline lives (an object in the queue's result bucket)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    bucket: str
    name: str
    size: int
    sha256: str


# Exclusion tests as C callables (a Python function per field costs a microsecond per record).
_is_none = functools.partial(operator.is_, None)
_is_zero = functools.partial(operator.eq, 0)
_is_one = functools.partial(operator.eq, 1)
_is_false = functools.partial(operator.is_, False)
_is_normal = functools.partial(operator.eq, "normal")


class Job(BaseModel):
    """One job record as stored in the queue's KV bucket (and returned by ``get``/``list``).

    Attributes:
        id: ``{PREFIX}-{n:03}``, unique across every process using the queue.
        payload: the submitted payload as JSON (the worker validates it into its type).
        status: the seed-compatible status (see the module docstring); use ``state``.
        worker: the worker name the job is targeted at.
        queued_by: free-form name of the submitter.
        queued_at / started_at / completed_at: Unix milliseconds.
        result: the handler's return value (JSON); ``None`` when stored by reference.
        error: the final error of a failed or dead job.
        state: the lifecycle state.
        attempt: attempts started so far (1 on the first run).
        max_attempts: attempts allowed; ``None`` until a worker applies its policy.
        progress / progress_message: the last ``ctx.progress(fraction, message)``.
        cancel_requested: a cancellation was asked while the job was running.
        run_at: Unix ms before which the job is not run (delays, backoff).
        idempotency_key: the key a submit was de-duplicated on.
        last_error: the most recent failed attempt's error (kept on dead jobs and retries).
        timeout_s: per-job timeout overriding the worker's.
        result_ref: where a large result is stored.
        schedule: the cron schedule name that created the job.
        claimed_by: the worker instance holding a running job.
        updated_at: Unix ms of the last write.
        dispatch: generation of the dispatch message (stale messages are dropped).
        dispatch_seq: stream sequence of the message the current attempt was claimed from.
        claimed_from: the state the current attempt was claimed from.
        priority: ``low``, ``normal`` or ``high``.
        checkpoint: the last ``job.checkpoint(state)`` stored inline (see ``checkpoint_ref``).
        checkpoint_ref: where a checkpoint too large to store inline lives.
        retention_s: the record is deleted this long after the job finished (None: kept).
        last_traceback: the last failed attempt's traceback, shortened to its last frames
            (the full one is in the worker's log).
        trace_context: the submitter's W3C trace context (``traceparent``, ``tracestate``,
            ``baggage``) when tracing is on, so attempts in any process join the submit's trace.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    payload: Any = None
    status: SeedStatus = "queued"
    worker: str
    queued_by: str = ""
    queued_at: int = Field(default_factory=now_ms)
    started_at: int | None = None
    completed_at: int | None = None
    result: Any = None
    error: str | None = None
    state: JobState = JobState.QUEUED
    # Past the seed's fields and ``state``, a field at its default is left out of the record: a
    # queued record is half the size, and every reader (this model, a seed reader) gets the same job.
    attempt: int = Field(default=0, exclude_if=_is_zero)
    max_attempts: int | None = Field(default=None, exclude_if=_is_none)
    progress: float | None = Field(default=None, exclude_if=_is_none)
    progress_message: str | None = Field(default=None, exclude_if=_is_none)
    cancel_requested: bool = Field(default=False, exclude_if=_is_false)
    run_at: int | None = Field(default=None, exclude_if=_is_none)
    idempotency_key: str | None = Field(default=None, exclude_if=_is_none)
    last_error: str | None = Field(default=None, exclude_if=_is_none)
    timeout_s: float | None = Field(default=None, exclude_if=_is_none)
    result_ref: ResultRef | None = Field(default=None, exclude_if=_is_none)
    schedule: str | None = Field(default=None, exclude_if=_is_none)
    claimed_by: str | None = Field(default=None, exclude_if=_is_none)
    updated_at: int = Field(default_factory=now_ms)
    dispatch: int = Field(default=1, exclude_if=_is_one)
    dispatch_seq: int | None = Field(default=None, exclude_if=_is_none)
    claimed_from: JobState | None = Field(default=None, exclude_if=_is_none)
    priority: Priority = Field(default="normal", exclude_if=_is_normal)
    checkpoint: Any = Field(default=None, exclude_if=_is_none)
    checkpoint_ref: ResultRef | None = Field(default=None, exclude_if=_is_none)
    retention_s: float | None = Field(default=None, exclude_if=_is_none)
    trace_context: dict[str, str] | None = Field(default=None, exclude_if=_is_none)
    # the last failed attempt's traceback, short (its last frames); absent until an attempt raised
    last_traceback: str | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="before")
    @classmethod
    def _state_from_status(cls, data: Any) -> Any:
        # A record written by a seed-shaped writer has no ``state``: its status is the state.
        if isinstance(data, Mapping) and "state" not in data and "status" in data:
            data = {**data, "state": data["status"]}
        return data

    @model_validator(mode="after")
    def _status_from_state(self) -> Self:
        expected = self.state.seed_status
        if self.status != expected:
            object.__setattr__(self, "status", expected)
        return self

    @property
    def is_finished(self) -> bool:
        """True once the job reached a final state."""
        return self.state.is_finished

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied, ``status`` kept consistent and ``updated_at`` stamped."""
        if "state" in changes:
            changes["status"] = JobState(changes["state"]).seed_status
        changes.setdefault("updated_at", now_ms())
        return self.model_copy(update=changes)

    def to_json(self) -> bytes:
        """Compact JSON, seed fields first in contract order."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Job:
        """Parse a job record; raise :class:`SerializationError` naming the bad fields."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
            raise SerializationError(f"invalid Job JSON: {fields}") from exc


class Backoff(BaseModel):
    """Exponential backoff with jitter between attempts of a failing job.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(max_s, initial_s * factor ** (n - 1))``, then multiplied by a random factor in
    ``[1 - jitter, 1 + jitter]`` so retries of many jobs spread out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=300.0, ge=0)
    jitter: float = Field(default=0.1, ge=0, le=1)

    def delay_s(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failed_attempts`` failures (``>= 1``)."""
        exponent = max(failed_attempts, 1) - 1
        try:
            base = min(self.max_s, self.initial_s * self.factor**exponent)
        except OverflowError:
            base = self.max_s
        if self.jitter:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base)


@dataclass(frozen=True, slots=True)
class JobCounts:
    """How many jobs are in each state (read from counters, never by scanning jobs)."""

    scheduled: int = 0
    queued: int = 0
    running: int = 0
    complete: int = 0
    failed: int = 0
    cancelled: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        """All jobs ever submitted and still recorded."""
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """``{state: count}`` in lifecycle order."""
        return {state.value: getattr(self, state.value) for state in JobState}

    def as_seed_tuple(self) -> tuple[int, int, int, int]:
        """``(queued, running, complete, failed)`` as noesis-ship's ``counts()`` returns them."""
        return (
            self.scheduled + self.queued,
            self.running,
            self.complete,
            self.failed + self.cancelled + self.dead,
        )


class WorkerInfo(BaseModel):
    """One running worker instance as it advertises itself.

    Attributes:
        worker: the worker name it serves.
        queue: the queue's name.
        instance: the process's holder id (``host:pid:random``).
        concurrency: jobs it runs at once.
        priority_levels: priority levels it serves.
        max_attempts: attempts it gives a job that sets none itself.
        payload_schema: the JSON schema of the payloads it accepts.
        started_at: Unix ms when it started.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: str
    queue: str
    instance: str
    concurrency: int
    priority_levels: int = 3
    max_attempts: int | None = None
    payload_schema: dict[str, Any] = {}
    started_at: int = 0
