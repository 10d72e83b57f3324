"""Every NATS name one job queue uses, derived once from its name: :class:`QueueLayout`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipkit._names import (
    sanitize_consumer_name,
    validate_bucket_name,
    validate_subject,
    validate_token,
)
from shipkit.config import StorageType
from shipkit.errors import InvalidNameError

# Job ids are "{prefix}-{n}": the prefix may not hold the "-" that separates the number.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_]+$")


def validate_prefix(prefix: str) -> str:
    """An id prefix: letters, digits and ``_`` (the ``-`` separates it from the number)."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise InvalidNameError(f"job id prefix {prefix!r} must match [A-Za-z0-9_]+")
    return prefix


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Names for queue ``name`` (defaults shown for ``name="jobs"``).

    - KV bucket ``JOBS_jobs``: ``job.{id}`` records, ``idem.{digest}`` idempotency keys.
    - Work-queue stream ``JOBS_jobs_DISPATCH``: ``ship.jobs.jobs.dispatch.{worker}`` (one pull
      consumer per worker name), ``…sched.{id}`` (delayed jobs, ``Nats-Schedule: @at``) and
      ``…cron.{schedule}`` (recurring schedules).
    - Counter stream ``JOBS_jobs_COUNTERS``: ``…ids`` (the id counter) and
      ``…count.{from}.{to}`` (one counter per state transition).
    - Object bucket ``JOBS_jobs_RESULTS``: large results and checkpoints.
    - KV bucket ``JOBS_jobs_WORKERS``: ``{worker}.{instance}`` entries of running workers.
    - Core subject ``…cancel.{id}``: live cancellation notices to running workers.
    """

    name: str
    prefix: str
    subject_prefix: str
    storage: StorageType = "file"  # of every stream and bucket the queue creates
    replicas: int = 1

    @classmethod
    def build(
        cls, name: str, prefix: str, subject_prefix: str | None, *, storage: StorageType = "file", replicas: int = 1
    ) -> QueueLayout:
        """Validate the inputs and derive the layout."""
        validate_bucket_name(name, "job queue name")
        validate_prefix(prefix)
        subjects = subject_prefix or f"ship.jobs.{name}"
        validate_subject(subjects, "job subject prefix")
        return cls(name=name, prefix=prefix, subject_prefix=subjects, storage=storage, replicas=replicas)

    @property
    def bucket(self) -> str:
        """The KV bucket holding job records."""
        return f"JOBS_{self.name}"

    @property
    def kv_stream(self) -> str:
        """The stream backing the KV bucket."""
        return f"KV_{self.bucket}"

    @property
    def dispatch_stream(self) -> str:
        """The work-queue stream carrying dispatch, delayed and cron messages."""
        return f"JOBS_{self.name}_DISPATCH"

    @property
    def counter_stream(self) -> str:
        """The counter stream (ids and state-transition counts)."""
        return f"JOBS_{self.name}_COUNTERS"

    @property
    def workers_bucket(self) -> str:
        """The KV bucket where running workers advertise themselves."""
        return f"JOBS_{self.name}_WORKERS"

    @property
    def results_bucket(self) -> str:
        """The object bucket for results over the inline limit."""
        return f"JOBS_{self.name}_RESULTS"

    def record_subject(self, job_id: str) -> str:
        """The KV subject of a job record."""
        return f"$KV.{self.bucket}.job.{job_id}"

    def idem_subject(self, digest: str) -> str:
        """The KV subject of an idempotency key."""
        return f"$KV.{self.bucket}.idem.{digest}"

    def dispatch_subject(self, worker: str, priority: str = "normal") -> str:
        """Where jobs for ``worker`` are dispatched (``normal`` on ``…dispatch.{worker}``, others below it)."""
        base = f"{self.subject_prefix}.dispatch.{validate_token(worker, 'worker name')}"
        return base if priority == "normal" else f"{base}.{priority}"

    def schedule_subject(self, job_id: str) -> str:
        """Where the ``@at`` schedule of a delayed job waits."""
        return f"{self.subject_prefix}.sched.{job_id}"

    def cron_subject(self, schedule: str) -> str:
        """Where a recurring schedule's ``Nats-Schedule`` message lives."""
        return f"{self.subject_prefix}.cron.{validate_token(schedule, 'schedule name')}"

    @property
    def cron_filter(self) -> str:
        """All recurring schedules."""
        return f"{self.subject_prefix}.cron.*"

    @property
    def ids_subject(self) -> str:
        """The id counter."""
        return f"{self.subject_prefix}.ids"

    def count_subject(self, source: str, target: str) -> str:
        """The counter of transitions from ``source`` to ``target`` (``new`` for submits)."""
        return f"{self.subject_prefix}.count.{source}.{target}"

    @property
    def count_filter(self) -> str:
        """All transition counters."""
        return f"{self.subject_prefix}.count.>"

    def cancel_subject(self, job_id: str) -> str:
        """Core subject announcing a cancellation request for a running job."""
        return f"{self.subject_prefix}.cancel.{job_id}"

    @property
    def cancel_filter(self) -> str:
        """All cancellation notices of this queue."""
        return f"{self.subject_prefix}.cancel.*"

    def consumer_name(self, worker: str, priority: str = "normal") -> str:
        """The durable pull consumer shared by every process serving ``worker`` at ``priority``."""
        name = sanitize_consumer_name(validate_token(worker, "worker name"))
        return name if priority == "normal" else f"{name}_{priority}"
