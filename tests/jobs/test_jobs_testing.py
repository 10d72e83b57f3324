"""``shipkit.testing.run_job``: a worker function run with a real JobContext against the test server."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shipkit import ConnectionManager
from shipkit.jobs import JobContext, JobState
from shipkit.testing import run_job


class Epochs(BaseModel):
    """A typed payload."""

    epochs: int


async def train(job: JobContext, run: Epochs) -> dict[str, Any]:
    """Resumes from its checkpoint, checkpoints and reports progress each epoch."""
    start = job.resume_from["epoch"] if job.resume_from else 0
    for epoch in range(start, run.epochs):
        await job.checkpoint({"epoch": epoch + 1})
        await job.progress((epoch + 1) / run.epochs)
    return {"epochs_run": run.epochs - start, "attempt": job.attempt}


async def test_run_job_runs_the_function_fresh_and_resumed(shipkit_connection: ConnectionManager) -> None:
    """A fresh run does every epoch; with resume_from the first attempt skips what the checkpoint covers."""
    fresh = await run_job(train, {"epochs": 3}, shipkit_connection)
    assert (fresh.state, fresh.result, fresh.checkpoint, fresh.progress) == (
        JobState.COMPLETE,
        {"epochs_run": 3, "attempt": 1},
        {"epoch": 3},
        1.0,
    )
    resumed = await run_job(train, {"epochs": 3}, shipkit_connection, resume_from={"epoch": 2})
    assert resumed.result == {"epochs_run": 1, "attempt": 1}


async def test_run_job_reports_failures_and_bad_payloads(shipkit_connection: ConnectionManager) -> None:
    """An exception fails the job (dead after its attempts); a payload of the wrong shape makes it dead at once."""

    async def broken(payload: Any) -> None:
        raise RuntimeError("boom")

    failed = await run_job(broken, {}, shipkit_connection, max_attempts=2)
    assert (failed.state, failed.attempt, failed.error) == (JobState.DEAD, 2, "RuntimeError: boom")
    bad = await run_job(train, {"epochs": "many"}, shipkit_connection, max_attempts=3)
    assert bad.state is JobState.DEAD and bad.attempt == 1
    assert bad.error is not None and bad.error.startswith("payload does not match Epochs: epochs:")
