"""A runnable job queue: a "GPU trainer" worker, a planner that queues runs, progress and retries.

    python examples/jobs/training_queue.py                    # starts its own nats-server
    python examples/jobs/training_queue.py nats://host:4222   # or uses yours

What it shows: a typed payload, ``job.progress``, a failing attempt retried with backoff, a
delayed job, an idempotent submit, results, ``counts()``, and a graceful stop. While it runs,
``shipkit jobs ls --nats-url <url>`` (or ``python -m shipkit.cli.jobs``) shows the same jobs
from another terminal.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from shipkit.jobs import Backoff, JobContext, JobQueue, JobState, JobWorker, JobWorkerSpec
from shipkit.server import NatsServer


class TrainingRun(BaseModel):
    """What the planner asks the trainer to do."""

    model: str
    epochs: int
    flaky: bool = False


async def train(run: TrainingRun, job: JobContext) -> dict[str, float]:
    """Pretend to train: report progress per epoch; a flaky run fails its first attempt."""
    if run.flaky and job.attempt == 1:
        raise RuntimeError("CUDA out of memory (simulated)")
    for epoch in range(1, run.epochs + 1):
        await asyncio.sleep(0.1)  # the "training"
        await job.progress(epoch / run.epochs, f"epoch {epoch}/{run.epochs}")
    return {"loss": round(1.0 / run.epochs, 3), "attempts": job.attempt}


async def main(url: str) -> None:
    async with JobQueue(url, payload_type=TrainingRun, source="example") as queue:
        spec = JobWorkerSpec.from_function(
            train, worker="gpu", concurrency=2, max_attempts=3, backoff=Backoff(initial_s=0.5), timeout_s=60
        )
        worker = JobWorker(queue, spec)
        await worker.start()

        ids = [
            await queue.submit(TrainingRun(model="tiny", epochs=3), "gpu", "planner"),
            await queue.submit(TrainingRun(model="flaky", epochs=2, flaky=True), "gpu", "planner"),
            await queue.submit(TrainingRun(model="later", epochs=1), "gpu", "planner", delay_s=1.5),
        ]
        again = await queue.submit(TrainingRun(model="tiny", epochs=3), "gpu", "planner", idempotency_key="nightly-1")
        same = await queue.submit(TrainingRun(model="tiny", epochs=3), "gpu", "planner", idempotency_key="nightly-1")
        print(f"queued {ids} and {again} (a repeated idempotent submit returned {same})")

        pending = set([*ids, again])
        while pending:
            for job_id in sorted(pending):
                job = await queue.get(job_id)
                if job is not None and job.is_finished:
                    pending.discard(job_id)
                    print(f"{job.id} {job.state.value} after {job.attempt} attempt(s): {job.result or job.error}")
                    if job.last_error:
                        print(f"   (an earlier attempt failed: {job.last_error})")
                elif job is not None and job.state is JobState.RUNNING and job.progress:
                    print(f"{job.id} running: {job.progress:.0%} {job.progress_message}")
            await asyncio.sleep(0.25)

        print("counts:", (await queue.counts()).as_dict())
        stats = await worker.stop(graceful_timeout_s=5)
        print(f"worker stopped: {stats}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with NatsServer() as server:
            asyncio.run(main(server.url))
