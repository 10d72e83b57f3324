"""A runnable job queue: a GPU box runs training jobs that checkpoint, resume and retry; a planner waits.

    python examples/jobs/training_queue.py                    # starts its own nats-server
    python examples/jobs/training_queue.py nats://host:4222   # or uses yours

What it shows: ``@service.job_worker`` with a typed payload, ``job.checkpoint`` after every
epoch and ``job.resume_from`` on the next attempt (a flaky run crashes at epoch 2 and its retry
starts from epoch 2, not 1), ``job.progress``, retries with backoff, a high-priority job, an
idempotent submit, and waiting for results with ``await handle.result()`` instead of polling.
While it runs, ``shipkit jobs ls --nats-url <url>`` shows the same jobs from another terminal.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pydantic import BaseModel

from shipkit import Service
from shipkit.jobs import Backoff, JobContext, JobQueue
from shipkit.server import NatsServer
from shipkit.service.runtime import Runtime

service = Service("gpu-box")


class TrainingRun(BaseModel):
    """What the planner asks the trainer to do."""

    model: str
    epochs: int
    flaky: bool = False


@service.job_worker("gpu", concurrency=2, max_attempts=3, backoff=Backoff(initial_s=0.2), timeout_s=60)
async def train(run: TrainingRun, job: JobContext) -> dict[str, Any]:
    """Pretend to train, one checkpoint per epoch; a flaky run crashes at epoch 2 on its first attempt."""
    start = job.resume_from["epoch"] if job.resume_from else 0
    if start:
        print(f"{job.id} attempt {job.attempt} resumes from epoch {start}")
    for epoch in range(start + 1, run.epochs + 1):
        if run.flaky and job.attempt == 1 and epoch == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        await asyncio.sleep(0.05)  # the "training"
        await job.checkpoint({"epoch": epoch})  # a later attempt starts after this epoch
        await job.progress(epoch / run.epochs, f"epoch {epoch}/{run.epochs}")
    return {"loss": round(1.0 / run.epochs, 3), "attempts": job.attempt, "resumed_from": start}


async def main(url: str) -> None:
    runtime = Runtime(service, url, graceful_timeout_s=5)
    await runtime.start()
    try:
        async with JobQueue(url, payload_type=TrainingRun, source="planner") as queue:
            handles = [
                await queue.submit(TrainingRun(model="tiny", epochs=3), "gpu", "planner"),
                await queue.submit(TrainingRun(model="flaky", epochs=3, flaky=True), "gpu", "planner"),
                await queue.submit(TrainingRun(model="eval", epochs=1), "gpu", "planner", priority="high"),
            ]
            nightly = TrainingRun(model="nightly", epochs=2)
            again = await queue.submit(nightly, "gpu", "planner", idempotency_key="nightly-1")
            same = await queue.submit(nightly, "gpu", "planner", idempotency_key="nightly-1")
            print(f"queued {handles} and {again} (a repeated idempotent submit returned {same})")
            results = await asyncio.gather(*(handle.result(timeout_s=30) for handle in [*handles, again]))
            for handle, result in zip([*handles, again], results, strict=True):
                job = await queue.get(handle)
                assert job is not None
                print(f"{job.id} {job.state.value} after {job.attempt} attempt(s): {result}")
                if job.last_error:
                    print(f"   (an earlier attempt failed: {job.last_error})")
            counts = await runtime.shutdown()  # the worker's last counter updates are flushed here
            print(f"worker stopped: handled={counts.handled} failed={counts.failed}")
            print("counts:", (await queue.counts()).as_dict())
    finally:
        await runtime.shutdown()  # a no-op when it stopped already


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with NatsServer() as server:
            asyncio.run(main(server.url))
