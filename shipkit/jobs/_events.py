"""Announcing transitions: the state counters and the ``job.*`` events on the event bus.

Both are posted after the record's compare-and-set succeeded (the record is the truth) through
the :class:`~shipkit.jobs._publisher.Publisher`: a job never waits for them, and a post the
server did not confirm (a restart) is re-sent under the same ``Nats-Msg-Id`` (events: derived
from the record revision the transition wrote; counters: per coalesced increment), so nothing
is counted or announced twice.
"""

from __future__ import annotations

from typing import Any

from shipkit.jobs import _js
from shipkit.jobs._publisher import Publisher
from shipkit.jobs._store import Counters
from shipkit.jobs.models import Job
from shipkit.models import ShipEvent

EVENT_TYPES = (
    "job.queued",
    "job.running",
    "job.progress",
    "job.complete",
    "job.failed",
    "job.retrying",
    "job.cancelled",
    "job.dead",
)


class Announcer:
    """Counts every transition and publishes its ``ShipEvent`` on ``{event_prefix}.{event_type}``."""

    def __init__(
        self,
        publisher: Publisher,
        counters: Counters,
        *,
        queue: str,
        events: bool,
        event_prefix: str,
        source: str,
    ) -> None:
        self._publisher = publisher
        self._counters = counters
        self._queue = queue
        self._events = events
        self._event_prefix = event_prefix
        self._source = source

    async def transition(self, before: str, job: Job, revision: int, event_type: str | None, **extra: Any) -> None:
        """Count ``before -> job.state`` (if it changed) and publish ``event_type`` (if given).

        ``revision`` is the record revision the transition wrote: it de-duplicates event re-sends.
        """
        if before != job.state.value:
            self._counters.add(before, job.state.value)
        if event_type is not None and self._events:
            await self._post_event(event_type, job, extra, msg_id=f"{job.id}.{revision}.{event_type}")

    async def bulk(self, before: str, jobs: list[Job], revisions: list[int], event_type: str) -> None:
        """Announce the same transition of many jobs (one counter increment for all)."""
        if not jobs:
            return
        self._counters.add(before, jobs[0].state.value, len(jobs))
        if self._events:
            for job, revision in zip(jobs, revisions, strict=True):
                await self._post_event(event_type, job, {}, msg_id=f"{job.id}.{revision}.{event_type}")

    async def _post_event(self, event_type: str, job: Job, extra: dict[str, Any], *, msg_id: str) -> None:
        payload: dict[str, Any] = {
            "id": job.id,
            "queue": self._queue,
            "worker": job.worker,
            "state": job.state.value,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
        }
        payload.update(extra)
        event = ShipEvent.new(event_type, payload, source=self._source)
        subject = f"{self._event_prefix}.{event_type}"
        await self._publisher.post(subject, event.to_json(), headers={_js.MSG_ID: msg_id}, what=f"event {subject}")
