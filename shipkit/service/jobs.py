"""Submitting and waiting for jobs from inside a service: :class:`ServiceJobs` (``ctx.jobs``).

Handlers, event consumers, KV watchers and job workers reach the service's job queue through
their context, without a lifespan, a module global or an accessor of their own::

    @service.handler("train")
    async def train(request: TrainingRequest, ctx: Context) -> dict[str, str]:
        handle = await ctx.jobs.submit(request, "trainer", priority="high")
        return {"job_id": handle}

    @service.on_event("job.complete")
    async def on_done(event: JobEvent, ctx: Context) -> None:
        report = await ctx.jobs("reports").submit({"job": event.id}, "reporter")

``ctx.jobs`` is the service's queue (``Service(job_queue=...)``), ``ctx.jobs("name")`` another
one; each queue is opened once per process on first use, shares the service's connection and
is closed at shutdown after the last job worker stopped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shipkit._names import validate_token
from shipkit.jobs import Job, JobCounts, JobHandle, JobQueue, Priority
from shipkit.service.host import Host

__all__ = ["ServiceJobs"]


class ServiceJobs:
    """One job queue as a service's code sees it; call it with a name for another queue.

    Args:
        host: the running service (it opens and caches the queues).
        queue: the queue's name.
    """

    __slots__ = ("_host", "_name")

    def __init__(self, host: Host, queue: str) -> None:
        self._host = host
        self._name = queue

    def __call__(self, queue: str) -> ServiceJobs:
        """The queue named ``queue`` (opened on first use)."""
        return ServiceJobs(self._host, validate_token(queue, "job queue name"))

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    async def queue(self) -> JobQueue[Any]:
        """The connected :class:`~shipkit.jobs.JobQueue` itself, for everything not mirrored here."""
        return await self._host.job_queue(self._name)

    async def submit(
        self,
        payload: Any,
        worker: str,
        *,
        queued_by: str | None = None,
        delay_s: float | None = None,
        run_at: datetime | float | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        priority: Priority = "normal",
    ) -> JobHandle:
        """Queue a job (see :meth:`JobQueue.submit`); ``queued_by`` defaults to the service's name."""
        queue = await self.queue()
        return await queue.submit(
            payload,
            worker,
            self._host.service_name if queued_by is None else queued_by,
            delay_s=delay_s,
            run_at=run_at,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            priority=priority,
        )

    async def get(self, job_id: str) -> Job | None:
        """The job's record, or None (see :meth:`JobQueue.get`)."""
        return await (await self.queue()).get(job_id)

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """The job's record once it finished (see :meth:`JobQueue.wait`)."""
        return await (await self.queue()).wait(job_id, timeout_s=timeout_s)

    async def result(self, job_id: str) -> Any:
        """A completed job's result (see :meth:`JobQueue.result`)."""
        return await (await self.queue()).result(job_id)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job (see :meth:`JobQueue.cancel`)."""
        return await (await self.queue()).cancel(job_id)

    async def counts(self) -> JobCounts:
        """Jobs per state (see :meth:`JobQueue.counts`)."""
        return await (await self.queue()).counts()

    def __repr__(self) -> str:
        return f"ServiceJobs(queue={self._name!r})"
