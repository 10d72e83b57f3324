"""What a job handler gets besides its payload: :class:`JobContext`.

Declare a parameter named ``job`` or annotated ``JobContext`` to receive it::

    async def train(payload: TrainingRun, job: JobContext) -> dict[str, float]:
        start = job.resume_from["epoch"] if job.resume_from else 0
        for epoch in range(start, payload.epochs):
            ...
            await job.checkpoint({"epoch": epoch + 1})
            await job.progress((epoch + 1) / payload.epochs, f"epoch {epoch + 1}")
        return {"loss": 0.1}
"""

from __future__ import annotations

from typing import Any

from shipkit.jobs._holder import Holder
from shipkit.jobs._lease import Lease
from shipkit.jobs.models import Job

__all__ = ["JobContext"]


class JobContext:
    """The running job as its handler sees it: identity, attempt, progress and cancellation.

    The lease is renewed automatically while the handler runs; ``progress`` also renews it.
    When the job is cancelled (or the worker shuts down, or the attempt times out) the
    handler's task is cancelled; ``cancelled`` tells code that checks cooperatively.

    Args:
        holder: the engine part that settles the jobs this process holds (the worker passes its
            queue's ``engine.holder``).
        lease: the held job.
        resume_from: the checkpoint an earlier attempt stored (the worker fetches it first).
    """

    __slots__ = ("_holder", "_lease", "_resume_from")

    def __init__(self, holder: Holder, lease: Lease, resume_from: Any = None) -> None:
        self._holder = holder
        self._lease = lease
        self._resume_from = resume_from

    @property
    def resume_from(self) -> Any:
        """The last checkpoint an earlier attempt stored, or None on a fresh start.

        Set after a crash takeover, a shutdown give-back or a retry of a job that called
        :meth:`checkpoint`; the handler skips the work it covers.
        """
        return self._resume_from

    @property
    def queue(self) -> str:
        """The name of the queue the job was taken from."""
        return self._holder.queue_name

    @property
    def payload(self) -> Any:
        """The payload as submitted (JSON); the handler's payload parameter has it validated."""
        return self._lease.job.payload

    @property
    def priority(self) -> str:
        """The job's priority (``low``, ``normal`` or ``high``)."""
        return self._lease.job.priority

    @property
    def id(self) -> str:
        """The job id."""
        return self._lease.job.id

    @property
    def job(self) -> Job:
        """The job record as this worker last wrote it."""
        return self._lease.job

    @property
    def worker(self) -> str:
        """The worker name the job was queued for."""
        return self._lease.job.worker

    @property
    def attempt(self) -> int:
        """This attempt's number (1 on the first run)."""
        return self._lease.job.attempt

    @property
    def max_attempts(self) -> int:
        """Attempts the job gets in all."""
        return self._lease.job.max_attempts or self._holder.default_max_attempts

    @property
    def cancelled(self) -> bool:
        """True once the job should stop (cancel requested, lease lost, shutdown or timeout)."""
        return self._lease.cancel_reason is not None or self._lease.job.cancel_requested

    @property
    def cancel_reason(self) -> str | None:
        """``"cancelled"``, ``"lost"``, ``"shutdown"`` or ``"timeout"`` once ``cancelled``; else None."""
        return self._lease.cancel_reason or ("cancelled" if self._lease.job.cancel_requested else None)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (``0.0``-``1.0``, optional message): stored in the job and announced.

        Raises:
            LeaseLostError: the job is no longer held by this worker.
        """
        await self._holder.progress(self._lease, fraction, message)

    async def checkpoint(self, state: Any) -> None:
        """Store ``state`` (any JSON value) with the job: a later attempt sees it as ``resume_from``.

        Small states go into the job record, large ones (over the queue's inline limit) into its
        object store; each call replaces the previous checkpoint and renews the lease.

        Raises:
            SerializationError: ``state`` is not JSON-able.
            LeaseLostError: the job is no longer held by this worker.
        """
        await self._holder.checkpoint(self._lease, state)

    async def heartbeat(self) -> None:
        """Renew the lease now (only needed if the event loop is blocked for long stretches)."""
        await self._holder.heartbeat(self._lease)

    def __repr__(self) -> str:
        return f"JobContext(id={self.id!r}, worker={self.worker!r}, attempt={self.attempt})"
