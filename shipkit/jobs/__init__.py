"""Durable, distributed jobs on NATS JetStream.

:class:`JobQueue` stores jobs (submit from any process, exactly one worker claims each,
everything survives restarts); :class:`JobWorker` runs a :class:`JobWorkerSpec`'s handler on
them with retries, timeouts, heartbeats, progress and cancellation. See ``docs/jobs.md``.
"""

from shipkit.errors import JobStateError, LeaseLostError
from shipkit.jobs.context import JobContext
from shipkit.jobs.events import JobEvent
from shipkit.jobs.handle import JobHandle
from shipkit.jobs.models import Backoff, Job, JobCounts, JobState, Priority, ResultRef, WorkerInfo
from shipkit.jobs.queue import JobQueue
from shipkit.jobs.schedule import CronExpression, Schedule
from shipkit.jobs.worker import JobWorker, JobWorkerStats
from shipkit.jobs.worker_spec import JobWorkerSpec

__all__ = [
    "Backoff",
    "CronExpression",
    "Job",
    "JobContext",
    "JobCounts",
    "JobEvent",
    "JobHandle",
    "JobQueue",
    "JobState",
    "JobStateError",
    "JobWorker",
    "JobWorkerSpec",
    "JobWorkerStats",
    "LeaseLostError",
    "Priority",
    "ResultRef",
    "Schedule",
    "WorkerInfo",
]
