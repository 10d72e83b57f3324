"""What ``JobQueue.submit`` returns: :class:`JobHandle`, a job id that can wait for its job."""

from __future__ import annotations

from typing import Any, Protocol

from shipkit.jobs.models import Job

__all__ = ["JobHandle"]


class _Waiter(Protocol):
    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> Job: ...

    async def result_of(self, job: Job) -> Any: ...


class JobHandle(str):
    """A submitted job's id (a ``str``: ``JOB-001``) that can wait for the job's end.

    ::

        handle = await queue.submit({"epochs": 3}, "trainer")
        result = await handle.result(timeout_s=600)    # the complete job's result
        job = await handle.wait()                      # or the finished record, whatever the end
    """

    _queue: _Waiter  # a str subclass cannot have __slots__: the reference lives in __dict__

    def __new__(cls, job_id: str, queue: _Waiter) -> JobHandle:
        handle = super().__new__(cls, job_id)
        handle._queue = queue
        return handle

    @property
    def id(self) -> str:
        """The job id as a plain string."""
        return str(self)

    async def wait(self, *, timeout_s: float | None = None) -> Job:
        """The job's record once it is complete, failed, dead or cancelled (see ``JobQueue.wait``)."""
        return await self._queue.wait(self, timeout_s=timeout_s)

    async def result(self, *, timeout_s: float | None = None) -> Any:
        """Wait for the job, then its result.

        Raises:
            JobStateError: the job ended failed, dead or cancelled (the message says which and why).
            NatsTimeoutError: it did not finish within ``timeout_s``.
        """
        return await self._queue.result_of(await self.wait(timeout_s=timeout_s))
