"""Progress coalescing: many reports make a few writes and events, the last report always stored."""

from __future__ import annotations

from typing import Any

from jobs_helpers import EventRecorder

from shipkit.config import NatsConfig
from shipkit.jobs import JobContext, JobQueue, JobWorker, JobWorkerSpec


async def chatty(payload: int, job: JobContext) -> str:
    """Reports progress ``payload`` times as fast as it can."""
    for step in range(1, payload + 1):
        await job.progress(step / payload, f"step {step}")
    return "done"


async def test_a_hundred_reports_make_a_few_events_and_keep_the_last(shipkit_nats_url: str) -> None:
    """100 reports inside one interval: the first and the last are written, nothing in between is lost last."""
    config = NatsConfig.from_url(shipkit_nats_url, request_timeout_s=5.0)
    async with EventRecorder(shipkit_nats_url) as events, JobQueue(config, progress_interval_s=10) as queue:
        async with JobWorker(queue, JobWorkerSpec.from_function(chatty, worker="w")):
            job = await queue.submit(100, "w")
            done = await queue.wait(job, timeout_s=5)
        await events.wait("job.complete", job)
    assert (done.progress, done.progress_message) == (1.0, "step 100")
    assert [e["payload"]["progress"] for e in events.of("job.progress", job)] == [0.01, 1.0]


async def test_progress_events_can_be_switched_off_per_queue(shipkit_nats_url: str) -> None:
    """With progress_events=False the record still carries progress, and no job.progress event is published."""
    config = NatsConfig.from_url(shipkit_nats_url, request_timeout_s=5.0)
    queue: JobQueue[Any] = JobQueue(config, progress_events=False, progress_interval_s=0)
    async with EventRecorder(shipkit_nats_url) as events, queue:
        async with JobWorker(queue, JobWorkerSpec.from_function(chatty, worker="w")):
            job = await queue.submit(5, "w")
            done = await queue.wait(job, timeout_s=5)
        await events.wait("job.complete", job)
    assert done.progress == 1.0
    assert events.of("job.progress", job) == [] and events.of("job.running", job)
