"""A small fleet to look at in ``shipkit dashboard``: two services, a GPU job worker, beings,
an agent heartbeat and a steady trickle of requests, events and jobs.

    python examples/fleet/fleet.py                      # starts its own nats-server, prints its URL
    python examples/fleet/fleet.py nats://host:4222     # or uses yours
    shipkit dashboard --nats-url <that URL> --allow-actions

Everything here is ordinary shipkit: the dashboard reads it from NATS like any other system.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from datetime import UTC, datetime

from pydantic import BaseModel

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.jobs import JobContext, JobQueue
from shipkit.primitives.beings import BeingRegistry
from shipkit.server import NatsServer
from shipkit.service.app import Service
from shipkit.service.client import Client
from shipkit.service.context import Context
from shipkit.service.runtime import Runtime

kanban = Service("kanban", "1.4.2", "A board of cards")
trainer = Service("trainer", "0.9.0", "Trains models on the GPU box", job_queue="training")


class Card(BaseModel):
    """A card on the board."""

    title: str


@kanban.handler("create", mutation="card.created")
async def create(card: Card, ctx: Context) -> dict[str, str]:
    """Create a card (emits ``card.created``)."""
    await asyncio.sleep(random.uniform(0.001, 0.01))
    return {"title": card.title, "by": ctx.service_name}


@kanban.handler("list")
async def list_cards(_: None = None) -> list[str]:
    """List cards."""
    return ["a", "b"]


class TrainingRun(BaseModel):
    """What a training job is asked to do."""

    model: str
    epochs: int


@trainer.job_worker("gpu", concurrency=2)
async def train(run: TrainingRun, job: JobContext) -> dict[str, float]:
    """Pretend to train, reporting progress per epoch."""
    for epoch in range(1, run.epochs + 1):
        await asyncio.sleep(0.6)
        await job.progress(epoch / run.epochs, f"epoch {epoch}/{run.epochs}")
    if run.model == "unstable":
        raise RuntimeError("loss diverged (nan) at the last epoch")
    return {"loss": round(1.0 / run.epochs, 3)}


async def heartbeat_agent(connection: ConnectionManager, stop: asyncio.Event) -> None:
    """Publish an agent-protocol heartbeat every 2 s, as an agent harness would."""
    while not stop.is_set():
        beat = {
            "agent": "reviewer",
            "owner": "acme",
            "session": "default",
            "instance_id": "reviewer-1",
            "ts": datetime.now(UTC).isoformat(),
            "interval_s": 2,
        }
        await connection.client.publish("agents.hb.reviewer.acme.default", json.dumps(beat).encode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


async def traffic(client: Client, queue: JobQueue[TrainingRun], stop: asyncio.Event) -> None:
    """Requests every 200 ms, a training job every 3 s."""
    n = 0
    while not stop.is_set():
        n += 1
        await client.request("kanban.create", {"title": f"card {n}"})
        if n % 15 == 1:
            model = random.choice(["resnet", "bert-tiny", "unstable", "gpt-nano"])
            await queue.submit(TrainingRun(model=model, epochs=random.randint(3, 8)), "gpu", "planner")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def main(url: str, stop: asyncio.Event | None = None) -> None:
    """Run the fleet on ``url`` until ``stop`` is set (or forever)."""
    stop = stop or asyncio.Event()
    connection = ConnectionManager(NatsConfig.from_url(url, name="fleet"))
    await connection.connect()
    runtimes = [Runtime(kanban, connection), Runtime(kanban, connection), Runtime(trainer, connection)]
    for runtime in runtimes:
        await runtime.start()
    queue: JobQueue[TrainingRun] = JobQueue(connection, name="training", payload_type=TrainingRun)
    async with queue, BeingRegistry(connection) as beings:
        await beings.register("forge", capabilities=["code"])
        await beings.update_status("forge", "working", current_task="TASK-7")
        await beings.register("scout", capabilities=["search"])
        for model in ("resnet", "bert-tiny"):
            await queue.submit(TrainingRun(model=model, epochs=4), "gpu", "planner")
        tasks = [
            asyncio.create_task(heartbeat_agent(connection, stop)),
            asyncio.create_task(traffic(Client(connection), queue, stop)),
        ]
        await stop.wait()
        await asyncio.gather(*tasks)
    for runtime in reversed(runtimes):
        await runtime.shutdown()
    await connection.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with NatsServer() as server:
            print(f"fleet on {server.url}: shipkit dashboard --nats-url {server.url}", flush=True)
            asyncio.run(main(server.url))
