"""The machinery under one :class:`~shipkit.jobs.queue.JobQueue`, wired once: :class:`JobEngine`.

The queue is the public facade and owns one engine; a :class:`~shipkit.jobs.worker.JobWorker`
receives the engine from it, and a :class:`~shipkit.jobs.context.JobContext` receives the
engine's :class:`~shipkit.jobs._holder.Holder`. Every collaborator is a public attribute, so
nothing reaches into another class's private parts::

    JobEngine
    ├── publisher   PipelinedPublisher   every JetStream publish and direct get, pipelined
    ├── store       JobStore             records in KV; the one compare-and-set loop
    ├── counters    Counters             the id counter and per-transition counts
    ├── ids         IdAllocator          fresh, block and idempotent ids
    ├── dispatch    DispatchStream       the work-queue stream, consumers, schedules
    ├── announcer   Announcer            counts and ``job.*`` events of every transition
    ├── leases      LeaseKeeper          renews held jobs, relays cancellations
    ├── results     ResultStore          inline or object-store results
    ├── retention   Retention            expiry of finished jobs, purge
    ├── registry    WorkerRegistry       running workers, their payload schemas
    └── holder      Holder               claims and settles the jobs this process holds

Operations on jobs this process does not hold (an operator's cancel, a seed-style
``complete`` from another process) live here too, so the queue only validates and delegates.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable

from nats.aio.msg import Msg

import shipkit.jobs._transitions as step
from shipkit import _tracing
from shipkit._publish import PipelinedPublisher
from shipkit.config import StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import JobStateError, KeyNotFoundError, RevisionConflictError, ShipkitError, translate_nats_errors
from shipkit.jobs._dispatch_stream import DispatchStream
from shipkit.jobs._events import Announcer
from shipkit.jobs._holder import Holder
from shipkit.jobs._ids import IdAllocator, validate_job_id
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._lease import LeaseKeeper
from shipkit.jobs._pull import Puller
from shipkit.jobs._registry import WorkerRegistry
from shipkit.jobs._results import ResultStore
from shipkit.jobs._retention import EXPIRE_WORKER, Retention
from shipkit.jobs._retry import TRANSIENT_ERRORS
from shipkit.jobs._store import ADJUST, NEW, Counters, JobStore
from shipkit.jobs.models import PRIORITIES, Backoff, Job, JobCounts, JobState, now_ms
from shipkit.logging import get_logger

log = get_logger(__name__)

_BULK_CHUNK = 256
_EXPIRY_LEASE_S = 30.0
_EXPIRY_CONCURRENCY = 16
_GIVE_BACK_ERRORS: tuple[type[ShipkitError], ...] = (JobStateError, *TRANSIENT_ERRORS)


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobEngine:
    """Stores, dispatches, holds and announces the jobs of one queue (see the module docstring).

    Args:
        connection: the connection manager (not closed here).
        layout: the queue's NATS names (and the storage of what it creates).
        max_attempts / backoff: the queue's defaults for jobs and workers that set none.
        events: the event-bus stream to provision, or None when events are off.
        event_prefix / source: where ``job.*`` events go and their ``source``.
        result_inline_max_bytes: larger results go to the object store.
    """

    def __init__(
        self,
        connection: ConnectionManager,
        layout: QueueLayout,
        *,
        max_attempts: int,
        backoff: Backoff,
        events: StreamConfig | None,
        event_prefix: str,
        source: str,
        result_inline_max_bytes: int,
        retention_s: float | None = None,
        progress_interval_s: float = 0.25,
        progress_events: bool = True,
    ) -> None:
        self.connection = connection
        self.retention_s = retention_s
        self.layout = layout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.instance_id = _instance_id()
        self._tracer = _tracing.tracer()  # decided once: submits are traced or not
        # The queue's replicas apply to its event stream too, unless that declares its own.
        if events is not None and events.replicas == 1 and layout.replicas > 1:
            events = events.with_replicas(layout.replicas)
        self._events_stream = events
        self.publisher = PipelinedPublisher(connection)
        self.store = JobStore(connection, layout, self.publisher)
        self.counters = Counters(connection, layout, self.publisher, owner=self.instance_id)
        self.ids = IdAllocator(self.counters, self.store, layout)
        self.dispatch = DispatchStream(connection, layout, self.publisher)
        self.announcer = Announcer(
            self.publisher,
            self.counters,
            queue=layout.name,
            events=events is not None,
            event_prefix=event_prefix,
            source=source,
            progress_events=progress_events,
            max_attempts_for=self._max_attempts_for,
        )
        self.leases = LeaseKeeper(connection, self.store, layout.cancel_filter)
        self.results = ResultStore(connection, layout, inline_max_bytes=result_inline_max_bytes)
        self.registry = WorkerRegistry(connection, layout, self.publisher)
        self.retention = Retention(layout, self.store, self.counters, self.results, self.dispatch, self.publisher)
        self.holder = Holder(
            store=self.store,
            ids=self.ids,
            results=self.results,
            announcer=self.announcer,
            keeper=self.leases,
            publisher=self.publisher,
            instance_id=self.instance_id,
            default_max_attempts=max_attempts,
            queue_name=layout.name,
            retention=self.retention,
            default_retention_s=retention_s,
            progress_interval_s=progress_interval_s,
        )
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self._expirer: Puller | None = None
        self._expiring: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Provision the streams and buckets; start publishing and renewing leases."""
        await self.publisher.start()
        await self.store.provision()
        await self.counters.provision()
        await self.dispatch.provision()
        if self._events_stream is not None:
            await self.connection.ensure_stream(self._events_stream)
        await self.leases.start()

    async def stop(self) -> None:
        """Give back jobs still held through ``claim``, stop renewing, drain counters and events."""
        if self.connection.is_connected:
            for lease in self.leases.leases():
                try:
                    await self.holder.give_back(lease)
                except _GIVE_BACK_ERRORS as exc:  # one job's give-back failing must not skip the rest
                    log.warning("job.give_back_failed", job_id=lease.job.id, error=str(exc))
        await self.leases.stop()
        await self._stop_expiry()
        await self.registry.stop()
        connected = self.connection.is_connected
        if connected:
            await self.counters.flush_all()
        await self.publisher.stop(drain_s=5.0 if connected else 0.0)

    async def start_expiry(self) -> None:
        """Take fired expiries of finished jobs from the shared ``_expire`` consumer (once per process)."""
        if self._expirer is not None:
            return
        consumer = await self.dispatch.ensure_consumer(EXPIRE_WORKER, _EXPIRY_LEASE_S)
        puller = Puller(self.connection, self.layout.dispatch_stream, consumer, _EXPIRY_CONCURRENCY, self._expire)
        self._expirer = puller
        puller.start()

    def _expire(self, msg: Msg) -> None:
        async def run() -> None:
            try:
                await self.retention.expire(msg)
            except ShipkitError as exc:  # unacked: the expiry comes back after its ack wait
                log.warning("job.expiry_failed", subject=msg.subject, error=str(exc))
            finally:
                if self._expirer is not None:
                    self._expirer.release()

        task = asyncio.get_running_loop().create_task(run())
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _stop_expiry(self) -> None:
        puller, self._expirer = self._expirer, None
        if puller is not None:
            await puller.stop()
        if self._expiring:
            await asyncio.gather(*self._expiring, return_exceptions=True)

    async def flush(self) -> None:
        """Wait until this process's counter updates and events are confirmed by the server."""
        await self.counters.flush_all()
        await self.publisher.flush()

    def _max_attempts_for(self, worker: str) -> int:
        """Attempts a job for ``worker`` that sets none gets: the advertised worker's, else the queue's."""
        return self.registry.known_max_attempts(worker) or self.max_attempts

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, build: Callable[[str, int], Job], idempotency_key: str | None) -> str:
        """Create the job ``build(id, now_ms)`` returns, dispatch and announce it; its id.

        With an idempotency key bound to a job already, nothing is created: that job's
        dispatch is re-sent if it still waits (its submitter may have died before sending it).
        When tracing is on, the submit is a ``send`` span whose context the record carries.
        """
        if self._tracer is None:
            return await self._submit(build, idempotency_key)

        def traced_build(headers: dict[str, str]) -> Callable[[str, int], Job]:
            return lambda job_id, now: build(job_id, now).model_copy(update={"trace_context": headers})

        destination = f"{self.layout.subject_prefix}.dispatch"
        return await _tracing.send(  # type: ignore[no-any-return]
            self._tracer,
            destination,
            None,
            lambda headers: self._submit(traced_build(headers), idempotency_key),
            operation_name="submit",
        )

    async def _submit(self, build: Callable[[str, int], Job], idempotency_key: str | None) -> str:
        if idempotency_key is not None:
            job_id = await self.ids.for_key(idempotency_key)
            found = await self.store.get(job_id)
            if found is not None:
                await self._redispatch_if_waiting(*found)
                return job_id
        else:
            job_id = await self.ids.next()
        job = build(job_id, now_ms())
        record = job.to_json()  # serialised once: for the record and its dispatch
        try:
            revision = await self.store.create(job, record)
        except RevisionConflictError:
            return job_id  # an identical idempotent submit created it a moment ago
        await self._send(job, revision, record)
        await self.announcer.transition(NEW, job, revision, "job.queued", queued_by=job.queued_by, run_at=job.run_at)
        return job_id

    async def submit_many(self, count: int, build: Callable[[list[str], int], list[Job]]) -> list[str]:
        """Create ``count`` jobs ``build(ids, now_ms)`` returns (one id reservation, pipelined writes)."""
        jobs = build(await self.ids.block(count), now_ms())
        for start in range(0, len(jobs), _BULK_CHUNK):
            chunk = jobs[start : start + _BULK_CHUNK]
            records = [job.to_json() for job in chunk]  # serialised once: for the record and its dispatch
            revisions = await self.store.create_many(chunk, records)
            await self.dispatch.dispatch_many(chunk, revisions, records)
            await self.announcer.bulk(NEW, chunk, revisions, "job.queued")
        return [job.id for job in jobs]

    async def _redispatch_if_waiting(self, job: Job, revision: int) -> None:
        """Re-send a waiting job's dispatch (de-duplicated by the server) in case its submitter died."""
        if job.state is JobState.QUEUED and job.attempt == 0:
            await self.dispatch.dispatch(job, revision)
        elif job.state is JobState.SCHEDULED and job.run_at is not None:
            await self.dispatch.schedule_at(job, revision, job.run_at)

    async def _send(self, job: Job, revision: int, record: bytes | None = None) -> None:
        if job.state is JobState.SCHEDULED and job.run_at is not None:
            await self.dispatch.schedule_at(job, revision, job.run_at)
        else:
            await self.dispatch.dispatch(job, revision, record)

    # -- the seed's worker side ------------------------------------------------------------

    async def claim(self, worker: str, lease_s: float) -> Job | None:
        """Take the oldest job queued for ``worker`` and hold it here; None when there is none now."""
        async with self._claim_locks.setdefault(worker, asyncio.Lock()):
            while True:
                msg = await self.dispatch.pull_one(worker, lease_s, PRIORITIES)
                if msg is None:
                    return None
                lease = await self.holder.claim(msg, lease_s=lease_s, default_max_attempts=self.max_attempts)
                if lease is not None:
                    return lease.job

    async def complete_elsewhere(self, job_id: str, result: object) -> Job:
        """Record the result of a running job this process does not hold."""
        value, ref = await self.results.store(job_id, result)
        now = now_ms()
        before, job, revision = await self.update(
            job_id, lambda j: step.complete(step.require_running(j, "complete"), result=value, result_ref=ref, now=now)
        )
        await self.announcer.transition(before.state.value, job, revision, "job.complete")
        await self.retention.schedule(job, revision, job.retention_s or self.retention_s)
        return job

    async def fail_elsewhere(self, job_id: str, error: str, *, retry: bool) -> Job:
        """Fail a running job this process does not hold: finally, or re-dispatched / dead."""
        now = now_ms()
        if not retry:
            before, job, revision = await self.update(
                job_id, lambda j: step.failed(step.require_running(j, "fail"), error=error, now=now)
            )
            await self.announcer.transition(before.state.value, job, revision, "job.failed", error=error)
            await self.retention.schedule(job, revision, job.retention_s or self.retention_s)
            return job
        before, job, revision = await self.update(
            job_id,
            lambda j: step.failed_elsewhere(j, error=error, default_max_attempts=self.max_attempts, now=now),
        )
        if job.state is JobState.DEAD:
            await self.announcer.transition(before.state.value, job, revision, "job.dead", error=error)
            await self.retention.schedule(job, revision, job.retention_s or self.retention_s)
        else:
            await self.dispatch.dispatch(job, revision)
            await self.announcer.transition(before.state.value, job, revision, "job.retrying", error=error, delay_s=0)
        return job

    # -- operator actions ------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel a waiting job at once; ask the holder of a running one to stop."""
        now = now_ms()
        before, job, revision = await self.update(job_id, lambda j: step.cancel_requested(j, now=now))
        if job.state is JobState.CANCELLED:
            if before.state is JobState.SCHEDULED:
                await self.dispatch.unschedule(job_id)
            await self.announcer.transition(before.state.value, job, revision, "job.cancelled")
            await self.retention.schedule(job, revision, job.retention_s or self.retention_s)
            return job
        subject = self.layout.cancel_subject(job_id)
        with translate_nats_errors(f"publish {subject}"):
            await self.connection.client.publish(subject, b"")
        lease = self.leases.get(job_id)
        if lease is not None:
            lease.signal("cancelled")
        return job

    async def retry(self, job_id: str) -> Job:
        """Requeue a failed, dead or cancelled job with fresh attempts."""
        now = now_ms()
        before, job, revision = await self.update(job_id, lambda j: step.requeued(j, now=now))
        await self.dispatch.dispatch(job, revision)
        await self.announcer.transition(before.state.value, job, revision, "job.queued", retried=True)
        return job

    async def recount(self, counted: JobCounts) -> JobCounts:
        """Scan every record and correct the counters from ``counted`` to what the records say."""
        actual = dict.fromkeys(JobState, 0)
        async for job in self.store.scan():
            actual[job.state] += 1
        had = counted.as_dict()
        for state, value in actual.items():
            if value != had[state.value]:
                await self.counters.bump(ADJUST, state.value, value - had[state.value])  # awaited: exact
                log.warning("job.counts_repaired", state=state.value, counted=had[state.value], actual=value)
        return JobCounts(**{state.value: value for state, value in actual.items()})

    async def update(self, job_id: str, change: Callable[[Job], Job]) -> tuple[Job, Job, int]:
        """Compare-and-set any job (not one held here): ``(before, after, revision after)``."""
        written = await self.store.update(validate_job_id(job_id), change)
        if written is None or written.after is None:
            raise KeyNotFoundError(f"no job {job_id!r} in queue {self.layout.name!r}")
        return written.before, written.after, written.revision
