"""One job queue as the dashboard sees it: :class:`QueueView`.

Counts come from the queue's counters (one batch direct get, however many jobs); the list from
a :class:`~shipkit.dashboard.job_index.JobIndex` kept current by a watch; a job's full record
from one direct get. Operator actions go through a :class:`~shipkit.jobs.queue.JobQueue`,
opened on the first action only, so a read-only dashboard never writes to the queue.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import OrderedDict, deque
from typing import Any

from shipkit import _jetstream as _js
from shipkit.connection import ConnectionManager
from shipkit.dashboard._wire import KvMirror
from shipkit.dashboard.job_index import JobIndex
from shipkit.errors import KeyNotFoundError
from shipkit.jobs._ids import validate_job_id
from shipkit.jobs.models import FINISHED_STATES, JobState
from shipkit.jobs.queue import JobQueue

SPARK_POINTS = 60
EVENTS_PER_JOB = 50
JOBS_WITH_EVENTS = 5000
_FINISHED = tuple(state.value for state in FINISHED_STATES)


class QueueView:
    """Counts, throughput, the job list, job pages and actions of queue ``name``.

    Args:
        connection: the dashboard's connection.
        name: the queue's name (its record bucket is ``JOBS_{name}``).
        subject_prefix: the queue's subjects (``ship.jobs.{name}`` unless configured).
    """

    def __init__(self, connection: ConnectionManager, name: str, subject_prefix: str) -> None:
        self.name = name
        self._connection = connection
        self._queue: JobQueue[Any] = JobQueue(connection, name=name, subject_prefix=subject_prefix, source="dashboard")
        layout = self._queue.layout
        self.index = JobIndex(name, f"$KV.{layout.bucket}.job.")
        self._mirror = KvMirror(connection, layout.kv_stream, layout.record_subject("*"), self.index.apply)
        self._counts: dict[str, int] = dict.fromkeys(JobState, 0)
        self._finished: deque[tuple[float, int]] = deque(maxlen=SPARK_POINTS + 1)
        self._events: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._opened = False

    async def start(self) -> None:
        """Start following the queue's records."""
        await self._mirror.start()

    async def stop(self) -> None:
        """Stop following; close the action queue if one was opened."""
        await self._mirror.stop()
        if self._opened:
            await self._queue.close()

    async def refresh(self) -> None:
        """Read the counters once and add a throughput point."""
        counts = await self._queue.engine.counters.counts()
        self._counts = counts.as_dict()
        self._finished.append((time.monotonic(), sum(self._counts[s] for s in _FINISHED)))

    def throughput(self) -> list[float]:
        """Jobs finished per second between consecutive refreshes, oldest first."""
        points = list(self._finished)
        return [
            round(max(0, b[1] - a[1]) / (b[0] - a[0]), 2) if b[0] > a[0] else 0.0 for a, b in itertools.pairwise(points)
        ]

    def snapshot(self) -> dict[str, Any]:
        """The queue's counts, throughput and list version (the page refetches when it moves)."""
        return {
            "name": self.name,
            "counts": self._counts,
            "total": sum(self._counts.values()),
            "throughput": self.throughput(),
            "indexed": len(self.index),
            "version": self.index.version,
            "workers": self.index.workers(),
        }

    def record_event(self, event: dict[str, Any]) -> None:
        """Keep a ``job.*`` event under its job (the last few per job, for the job page)."""
        payload = event.get("payload") or {}
        job_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(job_id, str):
            return
        history = self._events.get(job_id)
        if history is None:
            history = self._events[job_id] = deque(maxlen=EVENTS_PER_JOB)
            if len(self._events) > JOBS_WITH_EVENTS:
                self._events.popitem(last=False)
        history.append(event)

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """The full record of one job (one direct get) with the events seen for it, or None."""
        layout = self._queue.layout
        found = await _js.direct_get_last(
            self._connection, layout.kv_stream, layout.record_subject(validate_job_id(job_id))
        )
        if found is None:
            return None
        record = json.loads(found[0])
        return {
            "queue": self.name,
            "record": record,
            "revision": found[1],
            "events": list(self._events.get(job_id, ())),
        }

    async def act(self, action: str, job_id: str) -> dict[str, Any]:
        """Run ``cancel``, ``retry`` or ``purge`` on a job; the outcome in words and the new state."""
        validate_job_id(job_id)
        if not self._opened:
            await self._queue.connect()
            self._opened = True
        if action == "cancel":
            job = await self._queue.cancel(job_id)
            await self._queue.flush()  # counts on the page are exact when the outcome arrives
            if job.state is JobState.RUNNING:
                return {"ok": True, "state": job.state.value, "message": f"{job_id}: cancellation requested"}
            return {"ok": True, "state": job.state.value, "message": f"{job_id}: {job.state.value}"}
        if action == "retry":
            job = await self._queue.retry(job_id)
            await self._queue.flush()
            return {"ok": True, "state": job.state.value, "message": f"{job_id}: requeued ({job.state.value})"}
        if action == "purge":
            return await self._purge(job_id)
        raise KeyNotFoundError(f"unknown job action {action!r} (cancel, retry or purge)")

    async def _purge(self, job_id: str) -> dict[str, Any]:
        job = await self._queue.get(job_id)
        if job is None:
            raise KeyNotFoundError(f"no job {job_id!r} in queue {self.name!r}")
        await self._queue.delete(job_id)  # JobStateError for a job that has not finished
        return {"ok": True, "state": "purged", "message": f"{job_id}: purged ({job.state.value} record removed)"}
