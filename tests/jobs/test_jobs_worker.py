"""JobWorker in-process on a real server: handlers, retries, timeouts, cancellation, heartbeats, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jobs_helpers import EventRecorder, wait_state, wait_until
from pydantic import BaseModel

from shipkit.errors import JetStreamError
from shipkit.jobs import Backoff, JobContext, JobQueue, JobState, JobWorker, JobWorkerSpec

TINY = Backoff(initial_s=0.05, factor=2, max_s=0.2, jitter=0)


class Training(BaseModel):
    """A typed payload."""

    epochs: int


async def train(payload: Training, job: JobContext) -> dict[str, Any]:
    """Reports progress per epoch and returns a result."""
    for epoch in range(payload.epochs):
        await job.progress((epoch + 1) / payload.epochs, f"epoch {epoch + 1}")
    return {"epochs": payload.epochs, "attempt": job.attempt}


async def test_worker_runs_typed_handlers_and_records_results_and_progress(queue: JobQueue[Any]) -> None:
    """The handler gets a validated model; its return value completes the job; progress is visible."""
    worker = JobWorker(queue, JobWorkerSpec.from_function(train, worker="gpu"))
    await worker.start()
    job_id = await queue.submit({"epochs": 2}, "gpu")
    job = await wait_state(queue, job_id, JobState.COMPLETE)
    stats = await worker.stop(1)
    assert job.result == {"epochs": 2, "attempt": 1}
    assert (job.progress, job.progress_message) == (1.0, "epoch 2")
    assert stats.handled == 1 and stats.failed == 0


async def test_failures_retry_with_backoff_then_the_job_is_dead(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """A handler that always raises is retried max_attempts times with backoff, then dead with its error."""
    calls: list[float] = []

    async def flaky(payload: int) -> None:
        calls.append(asyncio.get_running_loop().time())
        raise ValueError(f"bad input {payload}")

    spec = JobWorkerSpec.from_function(flaky, worker="w", max_attempts=3, backoff=TINY)
    async with EventRecorder(shipkit_nats_url) as events, JobWorker(queue, spec):
        job_id = await queue.submit(7, "w")
        job = await wait_state(queue, job_id, JobState.DEAD)
        await events.wait("job.dead", job_id)
    assert (job.attempt, job.error, job.last_error) == (3, "ValueError: bad input 7", "ValueError: bad input 7")
    assert job.payload == 7
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.095  # 0.05 s, then 0.1 s
    retrying = events.of("job.retrying", job_id)
    assert [e["payload"]["delay_s"] for e in retrying] == [0.05, 0.1]
    assert events.of("job.dead", job_id)[0]["payload"]["error"] == "ValueError: bad input 7"


async def test_a_dead_job_can_be_retried_by_hand_and_then_succeeds(queue: JobQueue[Any]) -> None:
    """retry() of a dead job runs it again with fresh attempts."""
    fixed = asyncio.Event()

    async def sometimes(payload: int) -> str:
        if not fixed.is_set():
            raise RuntimeError("not yet")
        return "ok"

    spec = JobWorkerSpec.from_function(sometimes, worker="w", max_attempts=1)
    async with JobWorker(queue, spec):
        job_id = await queue.submit(1, "w")
        await wait_state(queue, job_id, JobState.DEAD)
        fixed.set()
        await queue.retry(job_id)
        job = await wait_state(queue, job_id, JobState.COMPLETE)
    assert job.result == "ok" and job.attempt == 1 and job.last_error == "RuntimeError: not yet"


async def test_timeout_cancels_the_handler_and_fails_the_attempt(queue: JobQueue[Any]) -> None:
    """An attempt over timeout_s is cancelled and counted as failed; without attempts left the job is dead."""
    cancelled = asyncio.Event()

    async def slow(payload: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    spec = JobWorkerSpec.from_function(slow, worker="w", timeout_s=0.2, max_attempts=1)
    async with JobWorker(queue, spec) as worker:
        job_id = await queue.submit(1, "w")
        job = await wait_state(queue, job_id, JobState.DEAD)
        assert worker.stats.failed == 1
    assert cancelled.is_set()
    assert job.error == "timed out after 0.2s"


async def test_per_job_timeout_overrides_the_workers(queue: JobQueue[Any]) -> None:
    """A job's own timeout_s wins over the worker's."""

    async def slow(payload: int) -> None:
        await asyncio.Event().wait()

    spec = JobWorkerSpec.from_function(slow, worker="w", timeout_s=60, max_attempts=1)
    async with JobWorker(queue, spec):
        job_id = await queue.submit(1, "w", timeout_s=0.1)
        job = await wait_state(queue, job_id, JobState.DEAD)
    assert job.error == "timed out after 0.1s"


async def test_cancelling_a_running_job_cancels_its_task(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """cancel() of a running job: the handler's context sees it, its task is cancelled, the job ends cancelled."""
    started = asyncio.Event()
    seen: list[bool] = []

    async def long(payload: int, job: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(job.cancelled)
            raise

    async with (
        EventRecorder(shipkit_nats_url) as events,
        JobWorker(queue, JobWorkerSpec.from_function(long, worker="w")) as worker,
    ):
        job_id = await queue.submit(1, "w")
        await asyncio.wait_for(started.wait(), 5)
        await queue.cancel(job_id)
        job = await wait_state(queue, job_id, JobState.CANCELLED)
        await events.wait("job.cancelled", job_id)
        assert worker.stats.cancelled == 1
    assert seen == [True]
    assert job.attempt == 1 and job.error == "cancelled"


async def test_long_job_with_heartbeats_is_not_redelivered(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """A job running ~3 s under a 1 s lease keeps its lease by heartbeats: an idle rival never gets it."""
    runs: list[str] = []

    async def long(payload: int, job: JobContext) -> int:
        runs.append(job.id)
        await asyncio.sleep(3)  # the work itself, not synchronisation
        return job.attempt

    spec = JobWorkerSpec.from_function(long, worker="w", lease_s=1)
    rival_queue: JobQueue[Any] = JobQueue(shipkit_nats_url)
    async with rival_queue, EventRecorder(shipkit_nats_url) as events, JobWorker(queue, spec):
        job_id = await queue.submit(1, "w")
        await events.wait("job.running", job_id)
        async with JobWorker(rival_queue, spec):  # would take the job over if the lease lapsed
            job = await wait_state(queue, job_id, JobState.COMPLETE, timeout=8)
    assert runs == [job_id]
    assert job.attempt == 1 and job.result == 1
    assert len(events.of("job.running", job_id)) == 1


async def test_bad_payload_makes_the_job_dead_at_once_without_a_crash_loop(queue: JobQueue[Any]) -> None:
    """A payload failing validation makes the job dead (one attempt) with a clear error; the worker goes on."""
    spec = JobWorkerSpec.from_function(train, worker="gpu", max_attempts=5)
    bad = await queue.submit({"epochs": "lots"}, "gpu")  # queued while no worker advertised a schema
    async with JobWorker(queue, spec) as worker:
        good = await queue.submit({"epochs": 1}, "gpu")
        dead = await wait_state(queue, bad, JobState.DEAD)
        await wait_state(queue, good, JobState.COMPLETE)
        assert worker.stats.handled == 1 and worker.stats.failed == 1
    assert dead.attempt == 1
    assert dead.error is not None and dead.error.startswith("payload does not match Training: epochs:")
    assert (await queue.counts()).dead == 1


async def test_undecodable_dispatch_messages_are_dropped_not_looped(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """Garbage published on a worker's dispatch subject is terminated and logged; real jobs still run."""
    import nats

    async def echo(payload: int) -> int:
        return payload

    async with JobWorker(queue, JobWorkerSpec.from_function(echo, worker="w")):
        nc = await nats.connect(shipkit_nats_url)
        try:
            await nc.jetstream().publish(queue.layout.dispatch_subject("w"), b"not json")
        finally:
            await nc.close()
        job_id = await queue.submit(5, "w")
        await wait_state(queue, job_id, JobState.COMPLETE)

    async def drained() -> bool:
        info = await queue.connection.jetstream.stream_info(queue.layout.dispatch_stream)
        return info.state.messages == 0

    await wait_until(drained)


async def test_worker_never_runs_more_jobs_than_its_concurrency(queue: JobQueue[Any]) -> None:
    """With concurrency 3 and 12 queued jobs, at most 3 handlers run at any moment, and all complete."""
    active = 0
    peak = 0

    async def work(payload: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)  # the work itself
        active -= 1
        return payload

    spec = JobWorkerSpec.from_function(work, worker="w", concurrency=3)
    async with JobWorker(queue, spec) as worker:
        await queue.submit_many(range(12), "w")
        await wait_until(lambda: _complete_count(queue, 12), timeout=10)
        assert worker.stats.handled == 12
    assert peak == 3


async def _complete_count(queue: JobQueue[Any], expected: int) -> bool:
    return (await queue.counts()).complete == expected


async def test_graceful_stop_lets_running_jobs_finish_within_the_grace(queue: JobQueue[Any]) -> None:
    """stop(grace) waits for a job that finishes in time; it completes normally."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def work(payload: int) -> str:
        started.set()
        await release.wait()
        return "finished"

    worker = JobWorker(queue, JobWorkerSpec.from_function(work, worker="w"))
    await worker.start()
    job_id = await queue.submit(1, "w")
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(worker.stop(graceful_timeout_s=5))
    release.set()
    stats = await stopping
    assert stats.handled == 1 and stats.given_back == 0
    assert (await queue.get(job_id)).state is JobState.COMPLETE  # type: ignore[union-attr]


async def test_stop_gives_unfinished_jobs_back_at_once(queue: JobQueue[Any]) -> None:
    """Jobs still running after the grace are cancelled and returned (attempt not counted); another worker runs them."""
    started = asyncio.Event()

    async def stuck(payload: int) -> None:
        started.set()
        await asyncio.Event().wait()

    first = JobWorker(queue, JobWorkerSpec.from_function(stuck, worker="w"))
    await first.start()
    job_id = await queue.submit(1, "w")
    await asyncio.wait_for(started.wait(), 5)
    stats = await first.stop(graceful_timeout_s=0.05)
    assert stats.given_back == 1
    back = await queue.get(job_id)
    assert back is not None and back.state is JobState.QUEUED and back.attempt == 0

    async def finish(payload: int, job: JobContext) -> int:
        return job.attempt

    async with JobWorker(queue, JobWorkerSpec.from_function(finish, worker="w")):
        done = await wait_state(queue, job_id, JobState.COMPLETE, timeout=3)
    assert done.result == 1


async def test_non_json_result_fails_the_attempt(queue: JobQueue[Any]) -> None:
    """A handler returning something that is not JSON fails its attempt with a clear error."""

    async def odd(payload: int) -> object:
        return object()

    async with JobWorker(queue, JobWorkerSpec.from_function(odd, worker="w", max_attempts=1)):
        job_id = await queue.submit(1, "w")
        job = await wait_state(queue, job_id, JobState.DEAD)
    assert job.error is not None and "not JSON-serialisable" in job.error


async def test_an_unsettled_job_is_redelivered_and_completes_counted_once(
    queue: JobQueue[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose completion write fails is not kept alive forever: its lease lapses, it is resumed and completes."""
    runs: list[int] = []
    real_complete = queue.engine.holder.complete

    async def complete_once_failing(lease: Any, result: Any, *, now: int | None = None) -> Any:
        if len(runs) == 1:  # the first run's write is lost (as to a server restart)
            raise JetStreamError("simulated: the completion write got no usable answer")
        return await real_complete(lease, result, now=now)

    monkeypatch.setattr(queue.engine.holder, "complete", complete_once_failing)

    async def work(payload: int, job: JobContext) -> int:
        runs.append(job.attempt)
        await job.progress(0.5, "half")  # the held record moves on before the lost write
        return payload * 2

    spec = JobWorkerSpec.from_function(work, worker="w", lease_s=0.5)
    async with JobWorker(queue, spec):
        job_id = await queue.submit(21, "w")
        job = await wait_state(queue, job_id, JobState.COMPLETE)
        await queue.flush()
    assert runs == [1, 1]  # the same attempt resumed after its lease, not a new one
    assert job.result == 42 and job.attempt == 1
    counts = await queue.counts()
    assert (counts.complete, counts.running, counts.queued) == (1, 0, 0)


async def test_a_failed_attempt_keeps_a_short_traceback_in_the_record(queue: JobQueue[Any]) -> None:
    """The record of a failed job carries the last frames of its traceback, and no local variable's value."""

    async def load_weights(payload: dict[str, str]) -> None:
        api_key = payload["key"]  # a local that must never reach the record
        raise FileNotFoundError(f"no checkpoint for {len(api_key)} chars")

    spec = JobWorkerSpec.from_function(load_weights, worker="loader", max_attempts=1, backoff=TINY)
    async with JobWorker(queue, spec):
        job_id = await queue.submit({"key": "sk-secret-value"}, "loader")
        job = await wait_state(queue, job_id, JobState.DEAD)
    assert job.last_traceback is not None
    assert (
        "load_weights" in job.last_traceback and "FileNotFoundError: no checkpoint for 15 chars" in job.last_traceback
    )
    assert "sk-secret-value" not in job.last_traceback
    assert len(job.last_traceback) <= 2001
