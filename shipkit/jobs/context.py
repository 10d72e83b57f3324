"""What a job handler gets besides its payload: :class:`JobContext`.

Declare a parameter named ``job`` or annotated ``JobContext`` to receive it::

    async def train(payload: TrainingRun, job: JobContext) -> dict[str, float]:
        for epoch in range(payload.epochs):
            ...
            await job.progress((epoch + 1) / payload.epochs, f"epoch {epoch + 1}")
        return {"loss": 0.1}
"""

from __future__ import annotations

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
    """

    __slots__ = ("_holder", "_lease")

    def __init__(self, holder: Holder, lease: Lease) -> None:
        self._holder = holder
        self._lease = lease

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

    async def heartbeat(self) -> None:
        """Renew the lease now (only needed if the event loop is blocked for long stretches)."""
        await self._holder.heartbeat(self._lease)

    def __repr__(self) -> str:
        return f"JobContext(id={self.id!r}, worker={self.worker!r}, attempt={self.attempt})"
