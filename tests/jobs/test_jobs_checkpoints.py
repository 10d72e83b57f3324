"""Checkpoints: the next attempt resumes from the last ``job.checkpoint`` after a crash, a retry or a give-back."""

from __future__ import annotations

import asyncio
from typing import Any

from jobs_helpers import WorkerProcess

from shipkit.config import NatsConfig
from shipkit.jobs import Backoff, JobContext, JobQueue, JobState, JobWorker, JobWorkerSpec

TINY = Backoff(initial_s=0.01, jitter=0)


async def test_a_sigkilled_worker_s_successor_resumes_from_its_checkpoint(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """SIGKILL a worker after its third checkpoint: the takeover attempt starts from that checkpoint."""
    doomed = await WorkerProcess(shipkit_nats_url, "trainer", mode="checkpoint", lease_s=1).start()
    job_id = await queue.submit({"epochs": 10}, "trainer")
    await doomed.wait_line("CHECKPOINTED", timeout=15)
    await doomed.kill()
    stored = await queue.get(job_id)
    assert stored is not None and stored.state is JobState.RUNNING and stored.checkpoint == {"step": 3}
    rescuer = await WorkerProcess(shipkit_nats_url, "trainer", mode="checkpoint", lease_s=1).start()
    try:
        job = await queue.wait(job_id, timeout_s=15)
    finally:
        await rescuer.terminate()
    assert job.state is JobState.COMPLETE
    assert job.result == {"resumed_from": {"step": 3}, "attempt": 2}
    assert rescuer.words("CHECKPOINTED") == []


async def test_a_large_checkpoint_goes_to_the_object_store_and_survives_a_retry(shipkit_nats_url: str) -> None:
    """A checkpoint over the inline limit is stored as an object; the retried attempt reads it back whole."""
    big = {"weights": "w" * 5000}
    seen: list[Any] = []

    async def train(payload: dict[str, Any], job: JobContext) -> str:
        seen.append(job.resume_from)
        if job.resume_from is None:
            await job.checkpoint(big)
            raise RuntimeError("GPU fell over")
        return "resumed"

    config = NatsConfig.from_url(shipkit_nats_url, request_timeout_s=5.0)
    async with JobQueue(config, result_inline_max_bytes=1024) as queue:
        spec = JobWorkerSpec.from_function(train, worker="gpu", max_attempts=2, backoff=TINY)
        async with JobWorker(queue, spec):
            handle = await queue.submit({}, "gpu")
            assert await handle.result(timeout_s=10) == "resumed"
        job = await queue.get(handle)
    assert seen == [None, big]
    assert job is not None and job.checkpoint is None and job.checkpoint_ref is not None
    assert job.checkpoint_ref.name == f"{handle}.checkpoint" and job.attempt == 2


async def test_a_job_given_back_at_shutdown_resumes_from_its_checkpoint(queue: JobQueue[Any]) -> None:
    """A worker stopping mid-job gives it back; the next worker's attempt sees the checkpoint."""
    checkpointed = asyncio.Event()

    async def first(payload: Any, job: JobContext) -> None:
        await job.checkpoint({"epoch": 7})
        checkpointed.set()
        await asyncio.Event().wait()

    async def second(payload: Any, job: JobContext) -> Any:
        return job.resume_from

    worker = JobWorker(queue, JobWorkerSpec.from_function(first, worker="w"))
    await worker.start()
    handle = await queue.submit({}, "w")
    await asyncio.wait_for(checkpointed.wait(), 5)
    assert (await worker.stop(graceful_timeout_s=0)).given_back == 1
    async with JobWorker(queue, JobWorkerSpec.from_function(second, worker="w")):
        assert await handle.result(timeout_s=5) == {"epoch": 7}
