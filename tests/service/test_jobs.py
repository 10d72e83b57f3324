"""``ctx.jobs`` in handlers, event consumers and job workers: submit, wait and results without a global."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from shipkit import ConnectionManager, Context, Service
from shipkit.jobs import JobContext, JobEvent, JobQueue, JobState
from shipkit.service.client import Client
from shipkit.testing import run_service


class Square(BaseModel):
    n: int


async def test_a_handler_submits_a_job_and_waits_for_its_result(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """A request handler queues a job through ctx.jobs and replies with the job's result."""
    service = Service("math")

    @service.job_worker("squarer")
    async def square(job: JobContext, task: Square) -> dict[str, int]:  # the context first: any order works
        return {"square": task.n * task.n, "attempt": job.attempt}

    @service.handler("square")
    async def handle(request: Square, ctx: Context) -> dict[str, Any]:
        handle = await ctx.jobs.submit(request, "squarer", priority="high")
        return {"id": str(handle), "result": await handle.result(timeout_s=5)}

    async with run_service(service, shipkit_connection):
        reply = await shipkit_client.request("math.square", {"n": 7})
    assert reply == {"id": "JOB-001", "result": {"square": 49, "attempt": 1}}


async def test_a_job_worker_and_an_event_consumer_reach_other_queues(shipkit_connection: ConnectionManager) -> None:
    """A worker's ctx.jobs("reports") queues a follow-up on another queue; an event consumer waits for it."""
    service = Service("pipeline")
    reported: asyncio.Queue[Any] = asyncio.Queue()

    @service.job_worker("trainer")
    async def train(ctx: Context, payload: dict[str, Any]) -> str:
        return str(await ctx.jobs("reports").submit({"trained": payload["model"]}, "reporter"))

    @service.job_worker("reporter", queue="reports")
    async def report(payload: dict[str, Any], ctx: Context, job: JobContext) -> dict[str, Any]:
        return {"report": payload["trained"], "queue": job.queue, "by": ctx.service_name}

    @service.on_event("job.complete")
    async def on_complete(event: JobEvent, ctx: Context) -> None:
        if event.queue == "jobs" and event.state is JobState.COMPLETE:
            follow_up = await ctx.jobs.result(event.id)
            await reported.put(await ctx.jobs("reports").wait(follow_up, timeout_s=5))

    async with run_service(service, shipkit_connection):
        queue: JobQueue[Any] = await JobQueue(shipkit_connection).connect()
        await queue.submit({"model": "m1"}, "trainer")
        job = await asyncio.wait_for(reported.get(), 10)
        await queue.close()
    assert job.state is JobState.COMPLETE
    assert job.result == {"report": "m1", "queue": "reports", "by": "pipeline"}
    assert job.queued_by == "pipeline"
