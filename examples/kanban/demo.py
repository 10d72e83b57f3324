"""See the kanban example work with one command: ``python -m examples.kanban.demo``.

Starts an embedded nats-server (JetStream, temporary store), runs the kanban service in this
process, calls it through :class:`~shipkit.Client` (the same tour as ``examples.kanban.client``),
then prints the audit trail that the durable ``card.*`` consumer recorded from the mutation
events, and what NATS service discovery reports. Everything is shut down in order; exit code 0.
"""

from __future__ import annotations

import asyncio
import sys

from examples.kanban.app import service, trail
from examples.kanban.client import tour
from shipkit import Client, NatsServer, Runtime
from shipkit.logging import configure_logging

MUTATIONS_IN_TOUR = 5
"""The tour creates three cards and moves two: five ``card.*`` events (failed requests emit none)."""


async def main() -> int:
    """Run the demo; return the exit code."""
    configure_logging("warning", "console")  # the service's own log lines would drown the story
    async with NatsServer() as server:
        print(f"embedded nats-server with JetStream at {server.url}")
        runtime = Runtime(service, server.url)
        await runtime.start()
        try:
            subjects = ", ".join(handler.subject for handler in service.handlers)
            print(f"service {service.name} {service.version} running in this process: {subjects}\n")
            async with Client(server.url, timeout_s=5) as client:
                await tour(client)
                info = await client.request(f"$SRV.INFO.{service.name}")
            entries = await trail.wait_for(MUTATIONS_IN_TOUR)
        finally:
            counts = await runtime.shutdown()

    print("\naudit trail (the durable card.* consumer, fed by the mutation events):")
    for entry in entries:
        card = entry.card
        line = f"{entry.event_type:<13} #{card.id} {card.title!r:<20} -> {card.column:<5}"
        print(f"  {line}  correlation_id={entry.correlation_id}")
    endpoints = ", ".join(endpoint["name"] for endpoint in info["endpoints"])
    print(f"\nnats micro info {info['name']}: version {info['version']}, endpoints {endpoints}")
    print(f"shut down in order: handled={counts.handled} failed={counts.failed} cancelled={counts.cancelled}")
    print(
        "\nnext: `shipkit run examples.kanban.app:service` in one terminal, "
        "`python -m examples.kanban.client` in another (see examples/kanban/README.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
