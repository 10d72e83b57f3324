"""@service.job_worker through the runtime: typed payloads, results, and jobs given back at shutdown."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipkit import ConnectionManager, Service, ShipEvent
from shipkit.jobs import JobContext, JobQueue, JobState
from shipkit.testing import run_service

sys.path.insert(0, str(Path(__file__).parent.parent / "jobs"))
from jobs_helpers import wait_state


class Resize(BaseModel):
    width: int


async def test_job_worker_completes_typed_jobs(shipkit_connection: ConnectionManager) -> None:
    """A decorated worker gets the validated payload; its return value completes the job, events follow."""
    service = Service("imaging")
    completed: asyncio.Queue[ShipEvent] = asyncio.Queue()

    @service.job_worker("resizer")
    async def resize(task: Resize, job: JobContext) -> dict[str, Any]:
        await job.progress(0.5, "half way")
        return {"width": task.width * 2, "attempt": job.attempt}

    @service.on_event("job.complete")
    async def on_complete(event: ShipEvent) -> None:
        await completed.put(event)

    queue: JobQueue[Any] = JobQueue(shipkit_connection)
    await queue.connect()
    try:
        async with run_service(service, shipkit_connection) as runtime:
            job_id = await queue.submit(Resize(width=21), "resizer", "test")
            job = await wait_state(queue, job_id, JobState.COMPLETE)
            event = await asyncio.wait_for(completed.get(), timeout=5)
        assert job.result == {"width": 42, "attempt": 1}
        assert job.status == "complete"
        assert job_id in event.to_json().decode()
        assert runtime.counts.handled >= 2  # the job and the event
    finally:
        await queue.close()


async def test_shutdown_gives_a_running_job_back(shipkit_connection: ConnectionManager) -> None:
    """A job still running when the grace period ends goes back to the queue, not lost or stuck running."""
    service = Service("slowpoke")
    started = asyncio.Event()

    @service.job_worker("sleeper")
    async def sleep_forever(_: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    queue: JobQueue[Any] = JobQueue(shipkit_connection)
    await queue.connect()
    try:
        async with run_service(service, shipkit_connection, graceful_timeout_s=0.2) as runtime:
            job_id = await queue.submit({}, "sleeper", "test")
            await asyncio.wait_for(started.wait(), timeout=5)
            await wait_state(queue, job_id, JobState.RUNNING)
        job = await wait_state(queue, job_id, JobState.QUEUED)
        assert job.state is JobState.QUEUED
        assert runtime.counts.cancelled == 1
    finally:
        await queue.close()
