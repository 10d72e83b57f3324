"""A streaming assistant agent: token streaming, a clarifying question, and a long task run as a job.

Run it from the repository root, then talk to it from another terminal::

    shipkit run examples.assistant.app:service
    shipkit agents ls
    shipkit agents prompt assistant "what's the weather like?"     # asks which city first
    shipkit agents prompt assistant "research tidal power"          # progress as status lines

- The "model" is a deterministic fake (:func:`fake_model`) that yields words with small delays,
  so nothing is downloaded and every run is the same.
- A question about the weather without a city makes the agent ask one mid-stream (``ctx.ask``).
- ``research ...`` hands the work to the ``researcher`` job worker (a durable job: it survives
  a restart of the agent) and streams the job's progress events as ``status`` chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel

from shipkit import AgentContext, AgentPrompt, Context, Service, ShipEvent
from shipkit.jobs import JobContext, JobQueue

TOKEN_DELAY_S = 0.01
"""Pause between the fake model's tokens: enough to see them stream."""
CITIES = ("paris", "oslo", "lima", "tokyo")


class Research(BaseModel):
    """What the assistant asks the researcher to do."""

    topic: str
    sources: int = 4


class Jobs:
    """The job queue the agent submits to, opened by the lifespan."""

    queue: JobQueue[Any] | None = None


@asynccontextmanager
async def lifespan(ctx: Context) -> AsyncIterator[None]:
    """Open the job queue on the service's connection for the agent to submit research."""
    async with JobQueue(ctx.connection, name="jobs", source="assistant") as queue:
        Jobs.queue = queue
        try:
            yield
        finally:
            Jobs.queue = None


service = Service("assistant", "1.0.0", "a streaming assistant agent", lifespan=lifespan)


def fake_model(prompt: str) -> list[str]:
    """The tokens a (fake, deterministic) model answers ``prompt`` with."""
    words = [word.strip("?!.,") for word in prompt.lower().split()]
    return ["You", " asked", ":", *(f" {word}" for word in words), "."]


@service.job_worker("researcher")
async def research(task: Research, job: JobContext) -> dict[str, str]:
    """The long task: read each source, reporting progress."""
    for source in range(1, task.sources + 1):
        await asyncio.sleep(0.02)  # reading a source
        await job.progress(source / task.sources, f"read source {source}/{task.sources}")
    return {"summary": f"{task.sources} sources agree that {task.topic} is promising"}


FINAL_EVENTS = ("job.complete", "job.dead", "job.cancelled")


async def research_as_job(ctx: AgentContext, topic: str) -> AsyncIterator[str]:
    """Submit the research job and relay its progress events as status chunks; yields the summary."""
    queue = Jobs.queue
    assert queue is not None  # the lifespan opened it before any prompt is taken
    events: asyncio.Queue[ShipEvent] = asyncio.Queue()
    job_id = ""

    async def on_event(msg: Any) -> None:
        event = ShipEvent.from_json(msg.data)
        if isinstance(event.payload, dict) and event.payload.get("id") == job_id:
            events.put_nowait(event)

    # subscribed before submitting, so not one of the job's events is missed
    subscription = await ctx.connection.client.subscribe("ship.events.job.>", cb=on_event)
    try:
        job_id = await queue.submit(Research(topic=topic), "researcher", "assistant")
        await ctx.status(f"researching as job {job_id}")
        while (event := await asyncio.wait_for(events.get(), 60)).event_type not in FINAL_EVENTS:
            if event.event_type == "job.progress":
                await ctx.status(str(event.payload.get("message") or "working"))
    finally:
        await subscription.unsubscribe()
    if event.event_type != "job.complete":
        raise RuntimeError(f"research job {job_id} ended {event.event_type}")
    result = await queue.result(job_id)
    for word in str(result["summary"]).split(" "):
        await asyncio.sleep(TOKEN_DELAY_S)
        yield word + " "


@service.agent("assistant", owner="shipkit", description="a streaming assistant (fake model)")
async def assistant(prompt: AgentPrompt, ctx: AgentContext) -> AsyncIterator[str]:
    """Answer with streamed tokens; ask for a missing city; run research as a durable job."""
    text = prompt.text.strip()
    if text.lower().startswith("research "):
        async for word in research_as_job(ctx, text[len("research ") :]):
            yield word
        return
    if "weather" in text.lower() and not any(city in text.lower() for city in CITIES):
        city = await ctx.ask("Which city?", timeout_s=120)
        text = f"{text} in {city}"
    await ctx.status("thinking")
    for token in fake_model(text):
        await asyncio.sleep(TOKEN_DELAY_S)
        yield token
