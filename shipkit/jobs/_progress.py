"""Coalescing progress writes per job: :class:`ProgressCoalescer`.

A handler may call ``job.progress()`` as often as it likes (every batch of a training loop);
the record is written (and ``job.progress`` announced) at most once per ``interval_s`` per
job. A report inside the interval is kept as *pending* and written when the interval ends, or
before the job is settled, so the last report is always stored; reports in between are
superseded, never queued up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shipkit.errors import ShipkitError
from shipkit.jobs._lease import Lease
from shipkit.logging import get_logger

log = get_logger(__name__)

Writer = Callable[[Lease, float, str | None], Awaitable[object]]


@dataclass(slots=True)
class _State:
    written_at: float = float("-inf")
    pending: tuple[float, str | None] | None = None
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None


class ProgressCoalescer:
    """Writes each held job's progress at most every ``interval_s`` (0: every report), the last one always."""

    def __init__(self, write: Writer, interval_s: float) -> None:
        self._write = write
        self.interval_s = interval_s
        self._states: dict[Lease, _State] = {}

    async def report(self, lease: Lease, fraction: float, message: str | None) -> None:
        """Write now if the interval passed since the last write, else keep it pending for the interval's end."""
        state = self._states.setdefault(lease, _State())
        state.pending = (fraction, message)
        loop = asyncio.get_running_loop()
        due = state.written_at + self.interval_s
        if loop.time() >= due and state.task is None:
            await self._write_pending(lease, state)
        elif state.timer is None:
            state.timer = loop.call_later(max(0.0, due - loop.time()), self._due, lease)

    def _due(self, lease: Lease) -> None:
        state = self._states.get(lease)
        if state is None:
            return
        state.timer = None
        if state.pending is not None and state.task is None and lease.settled is None:
            state.task = asyncio.get_running_loop().create_task(self._background(lease, state))

    async def _background(self, lease: Lease, state: _State) -> None:
        try:
            await self._write_pending(lease, state)
        except ShipkitError as exc:  # lease lost or server away: the settlement or the next report decides
            log.warning("job.progress_write_failed", job_id=lease.job.id, error=str(exc))
        finally:
            state.task = None

    async def _write_pending(self, lease: Lease, state: _State) -> None:
        pending, state.pending = state.pending, None
        if pending is None:
            return
        state.written_at = asyncio.get_running_loop().time()
        await self._write(lease, *pending)

    def forget(self, lease: Lease) -> None:
        """Drop what is pending for a lease this process lost (nothing of it may be written any more)."""
        state = self._states.pop(lease, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()

    async def settle(self, lease: Lease) -> None:
        """Before ``lease`` is settled: finish a background write, write what is pending, forget the job."""
        state = self._states.pop(lease, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if state.task is not None:
            await asyncio.gather(state.task, return_exceptions=True)
        await self._write_pending(lease, state)
