"""Deleting finished jobs: expiry after ``retention_s`` and ``purge``: :class:`Retention`.

Design (a sweeper driven by server-side schedules, not per-message TTL): when a job with a
retention ends, one ``Nats-Schedule: @at`` message is stored in the dispatch stream
(``…sched.{id}.expire``) aimed at the internal worker name ``_expire``. When it fires, any
process running a :class:`~shipkit.jobs.worker.JobWorker` of the queue takes it from the shared
``_expire`` consumer and deletes the record by compare-and-set (only if it is still the very
revision that finished: a job retried meanwhile schedules its own expiry), its result and
checkpoint objects with it, and counts the deletion as the transition ``{state} -> expired``.

Why not ``Nats-TTL`` on the record: the server would drop the record silently, and the
per-state counters (which ``counts()`` reads instead of scanning) would keep counting it. The
schedule costs one write per finished job *with* a retention, none otherwise, and nothing
needs to scan the records. ``purge`` (the CLI's ``jobs purge``) scans once and deletes the
same way, counted as ``{state} -> purged``.
"""

from __future__ import annotations

import json

from nats.aio.msg import Msg

from shipkit import _jetstream as _js
from shipkit._publish import PipelinedPublisher
from shipkit.errors import RevisionConflictError
from shipkit.jobs._dispatch_stream import SCHEDULE, SCHEDULE_TARGET, DispatchStream, at_header
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._results import ResultStore
from shipkit.jobs._settle import Settlement, settle
from shipkit.jobs._store import Counters, JobStore
from shipkit.jobs.models import FINISHED_STATES, Job, JobState, now_ms
from shipkit.logging import get_logger

log = get_logger(__name__)

EXPIRE_WORKER = "_expire"  # the internal worker name the expiry schedules fire at
EXPIRED = "expired"  # the pseudo-state expiry moves a job to (for the counters)
PURGED = "purged"  # the pseudo-state purge moves a job to


class Retention:
    """Schedules expiry of finished jobs, runs it, and purges on demand."""

    def __init__(
        self,
        layout: QueueLayout,
        store: JobStore,
        counters: Counters,
        results: ResultStore,
        dispatch: DispatchStream,
        publisher: PipelinedPublisher,
    ) -> None:
        self._layout = layout
        self._store = store
        self._counters = counters
        self._results = results
        self._dispatch = dispatch
        self._publisher = publisher

    async def schedule(self, job: Job, revision: int, retention_s: float | None) -> None:
        """Have the server fire the expiry of finished ``job`` (at ``revision``) after ``retention_s``."""
        if retention_s is None or job.state not in FINISHED_STATES:
            return
        subject = f"{self._layout.schedule_subject(job.id)}.expire"
        headers = {
            SCHEDULE: at_header((job.completed_at or now_ms()) + int(retention_s * 1000)),
            SCHEDULE_TARGET: self._layout.dispatch_subject(EXPIRE_WORKER),
            _js.MSG_ID: f"{job.id}.{revision}.expire",
        }
        body = json.dumps({"id": job.id, "rev": revision}, separators=(",", ":")).encode()
        await self._publisher.publish(subject, body, headers=headers)

    async def expire(self, msg: Msg) -> None:
        """Handle one fired expiry: delete the job if it is still the revision that finished; ack."""
        try:
            body = json.loads(msg.data)
            job_id, revision = str(body["id"]), int(body["rev"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("job.expiry_undecodable", subject=msg.subject, reason=str(exc)[:200])
            await settle(msg, Settlement.TERM, self._publisher)
            return
        found = await self._store.get(job_id)
        if found is not None and found[1] == revision:
            await self.delete(found[0], revision, EXPIRED)
        await settle(msg, Settlement.ACK, self._publisher)

    async def delete(self, job: Job, revision: int, reason: str) -> bool:
        """Delete a finished record by compare-and-set and count it; False if it changed meanwhile."""
        if job.state not in FINISHED_STATES:
            return False
        headers = {_js.KV_OPERATION: "DEL", _js.EXPECTED_LAST_SUBJECT_SEQ: str(revision)}
        try:
            ack = await self._publisher.publish(self._layout.record_subject(job.id), b"", headers=headers)
        except RevisionConflictError:
            return False  # retried or changed since: that version decides its own fate
        # Awaited and keyed on the deleting write, so a re-run after a crash counts it once.
        await self._counters.bump(job.state.value, reason, msg_id=f"{reason}.{job.id}.{ack['seq']}")
        for ref in (job.result_ref, job.checkpoint_ref):
            if ref is not None:
                await self._results.delete(ref)
        log.info("job.deleted", job_id=job.id, state=job.state.value, reason=reason)
        return True

    async def purge(
        self, *, states: frozenset[JobState], older_than_ms: int | None, worker: str | None, jobs: list[Job]
    ) -> int:
        """Delete the finished jobs among ``jobs`` matching the filters; how many were deleted."""
        cutoff = None if older_than_ms is None else now_ms() - older_than_ms
        deleted = 0
        for job in jobs:
            if job.state not in states or (worker is not None and job.worker != worker):
                continue
            if cutoff is not None and (job.completed_at or job.updated_at) > cutoff:
                continue
            found = await self._store.get(job.id)
            if found is not None and await self.delete(found[0], found[1], PURGED):
                deleted += 1
        return deleted
