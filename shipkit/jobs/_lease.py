"""Held jobs: :class:`Lease` (one running job this process holds) and :class:`LeaseKeeper`,
which keeps every lease alive and tells its holder about cancellations.

A lease is the dispatch message left unacknowledged plus the record's ``claimed_by``/``attempt``.
The keeper renews every lease with ``in_progress()`` (the server then restarts its
``ack_wait`` clock) every third of the lease, and reads each record on the same tick to notice
a cancellation request or a takeover it missed. Cancellations of running jobs are also
announced on a core subject, so a holder hears about them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit.connection import ConnectionManager
from shipkit.errors import ShipkitError, translate_nats_errors
from shipkit.jobs._store import JobStore
from shipkit.jobs._transitions import owned_by
from shipkit.jobs.models import Job, JobState
from shipkit.logging import get_logger

log = get_logger(__name__)

CancelReason = str  # "cancelled" (asked by someone), "lost" (taken over), "shutdown", "timeout"


@dataclass(eq=False)
class Lease:
    """One job this process holds, with its message and the record revision last written.

    Attributes:
        job: the record as this holder last wrote it.
        revision: its KV revision (the compare-and-set base for the next write).
        msg: the unacknowledged dispatch message.
        owner: this holder's ``claimed_by``.
        lease_s: the consumer's ``ack_wait``.
        cancel_reason: why the holder should stop, once it should.
        settled: the event of the final write this holder made (a retried settlement resumes after it).
        retention_s: the holding worker's retention for the job once finished (None: the queue's).
    """

    job: Job
    revision: int
    msg: Msg
    owner: str
    lease_s: float
    cancel_reason: CancelReason | None = None
    settled: str | None = None
    retention_s: float | None = None
    on_cancel: Callable[[CancelReason], None] | None = field(default=None, repr=False)

    @property
    def attempt(self) -> int:
        """The attempt this lease holds."""
        return self.job.attempt

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel the job."""
        return self.cancel_reason == "cancelled" or self.job.cancel_requested

    def signal(self, reason: CancelReason) -> None:
        """Tell the holder to stop, once; the first reason wins."""
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        if self.on_cancel is not None:
            self.on_cancel(reason)

    def owns(self, job: Job) -> bool:
        """True if ``job`` (a fresh read) is still held by this lease."""
        return owned_by(job, self.owner, self.attempt)


class LeaseKeeper:
    """Renews this process's leases and relays cancellations to their holders."""

    def __init__(self, connection: ConnectionManager, store: JobStore, cancel_filter: str) -> None:
        self.connection = connection
        self._store = store
        self._cancel_filter = cancel_filter
        self._leases: dict[str, Lease] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, job_id: str) -> Lease | None:
        """The lease held on ``job_id``, if this process holds one."""
        return self._leases.get(job_id)

    def leases(self) -> list[Lease]:
        """Every lease held now."""
        return list(self._leases.values())

    def add(self, lease: Lease) -> None:
        """Start keeping ``lease`` alive (replacing an older lease on the same job)."""
        self._leases[lease.job.id] = lease
        self._changed.set()

    def discard(self, lease: Lease) -> None:
        """Stop keeping ``lease`` (no-op if a newer lease replaced it)."""
        if self._leases.get(lease.job.id) is lease:
            del self._leases[lease.job.id]

    async def start(self) -> None:
        """Subscribe to cancellation notices and start the renewal loop."""
        if self._task is not None:
            return
        with translate_nats_errors(f"subscribe {self._cancel_filter}"):
            self._sub = await self.connection.client.subscribe(self._cancel_filter, cb=self._on_cancel_notice)
        self._task = asyncio.create_task(self._run(), name="shipkit-job-leases")

    async def stop(self) -> None:
        """Stop renewing (held leases then expire on the server unless settled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sub, self._sub = self._sub, None
        if sub is not None and self.connection.is_connected:
            with contextlib.suppress(ShipkitError), translate_nats_errors("unsubscribe cancel notices"):
                await sub.unsubscribe()

    async def _on_cancel_notice(self, msg: Msg) -> None:
        job_id = msg.subject.rpartition(".")[2]
        lease = self._leases.get(job_id)
        if lease is not None:
            log.info("job.cancel_received", job_id=job_id)
            lease.signal("cancelled")

    async def _run(self) -> None:
        while True:
            if not self._leases:
                self._changed.clear()
                await self._changed.wait()
                continue
            await asyncio.sleep(min(lease.lease_s for lease in self._leases.values()) / 3)
            try:
                await asyncio.gather(*(self._renew(lease) for lease in self.leases()))
            except Exception:  # a bug must not stop every lease from being renewed: log, next tick
                log.exception("job.lease_keeper_error")

    async def _renew(self, lease: Lease) -> None:
        try:
            with translate_nats_errors(f"renew lease {lease.job.id}"):
                await lease.msg.in_progress()
            await self.check(lease)
        except ShipkitError as exc:  # the connection is down: the next tick tries again
            log.warning("job.lease_renew_failed", job_id=lease.job.id, error=str(exc))

    async def check(self, lease: Lease) -> None:
        """Read the record once: signal a cancellation request or a takeover by another worker.

        A record that cannot be found is not taken as a loss (a restarting server can answer
        "not found" for a moment); the holder's next write settles it either way.
        """
        found = await self._store.get(lease.job.id)
        if found is None or self._leases.get(lease.job.id) is not lease:
            return  # unreadable right now, or settled while we were reading
        job = found[0]
        if job.state is JobState.RUNNING and not lease.owns(job):
            log.warning("job.lease_lost", job_id=lease.job.id, attempt=lease.attempt, holder=job.claimed_by)
            self.discard(lease)
            lease.signal("lost")
        elif job.cancel_requested:
            lease.signal("cancelled")
