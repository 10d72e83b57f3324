"""Fault benchmark: what a leader loss and a server restart cost a shipkit service.

Two scenarios, each on its own embedded servers:

- **cluster**: a 3-node JetStream cluster, an R3 event stream. One producer emits events one
  by one (ack awaited) while a durable consumer reads them and a client sends requests to a
  ``@service.handler``; a third of the way through, the node leading the stream is SIGKILLed.
- **single**: one server, the same producer/consumer/requester; the server is SIGKILLed and
  started again on the same port and store.

Printed per scenario (Markdown table on stdout, progress on stderr):

- *publish stall*: the longest time between two consecutive acknowledged emits (ms);
- *election*: from the kill until the stream answers ``STREAM.INFO`` with a leader again (ms;
  cluster only) -- the stall should be no longer than this;
- *consumer resume*: from the server answering again (the restarted node ready, or the new
  leader elected) until the consumer has the first event emitted after it (ms);
- *requests failed*: requests (1 s timeout, one at a time) that got an error during the outage;
- *lost* / *duplicated*: acknowledged events the consumer never saw / events stored twice.

Run from the repository root::

    .venv/bin/python bench/bench_faults.py            # 3 000 events per scenario
    .venv/bin/python bench/bench_faults.py --events 600 --only single
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_note, print_table, quiet_logging, warm_allocator

from shipkit import ShipEvent
from shipkit._cluster import NatsCluster
from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.primitives.consumer import DurableConsumer
from shipkit.primitives.eventbus import EventBus
from shipkit.server import NatsServer
from shipkit.service.app import Service
from shipkit.service.client import Client
from shipkit.testing import run_service

STREAM, PREFIX = "FAULTS", "bench.faults"


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


class Probe:
    """What the producer, consumer and requester saw."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, float]] = []  # (index, loop time of the ack)
        self.received: Counter[int] = Counter()
        self.first_seen: dict[int, float] = {}
        self.total = 0
        self.all_seen = asyncio.Event()
        self.request_errors = 0
        self.stop = asyncio.Event()

    async def on_event(self, msg: Any) -> None:
        """The consumer's handler: count each index, remember when it first came."""
        index = int(ShipEvent.from_json(msg.data).payload["i"])
        self.received[index] += 1
        self.first_seen.setdefault(index, asyncio.get_running_loop().time())
        if len(self.received) >= self.total:
            self.all_seen.set()

    def stall_ms(self) -> float:
        """The longest gap between consecutive acks."""
        times = [t for _, t in self.acked]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


async def produce(bus: EventBus, probe: Probe, total: int, at_fault: asyncio.Event) -> None:
    """Emit ``total`` events one by one; set ``at_fault`` a third of the way through."""
    loop = asyncio.get_running_loop()
    for i in range(total):
        await bus.emit("tick", {"i": i})
        probe.acked.append((i, loop.time()))
        if i == total // 3:
            at_fault.set()


async def request_loop(client: Client, probe: Probe) -> None:
    """One request at a time until told to stop; count the failures."""
    n = 0
    while not probe.stop.is_set():
        n += 1
        try:
            await client.request("faults.ping", {"n": n}, timeout_s=1.0)
        except Exception:  # counted: this is what the benchmark measures
            probe.request_errors += 1


async def leader_elected(nc: Any, stream: str, exclude: str) -> None:
    """Return once ``stream`` reports a leader other than ``exclude``."""
    while True:
        try:
            info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=0.5)).data)
            leader = (info.get("cluster") or {}).get("leader")
            if leader and leader != exclude:
                return
        except Exception:  # an election in progress: ask again
            pass
        await asyncio.sleep(0.01)


async def scenario(
    name: str, urls: list[str], replicas: int, fault: Callable[[ConnectionManager], Any], total: int
) -> dict[str, Any]:
    """Run producer, consumer and requester through ``fault``; the measurements."""
    config = NatsConfig(servers=urls, reconnect_time_wait_s=0.1, request_timeout_s=2.0, failover_timeout_s=30.0)
    probe, at_fault = Probe(), asyncio.Event()
    probe.total = total
    service = Service("faults")

    @service.handler("ping")
    async def ping(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    async with ConnectionManager(config) as conn, run_service(service, config) as runtime:
        bus = EventBus(conn, stream=StreamConfig.event_bus(STREAM, PREFIX).with_replicas(replicas), prefix=PREFIX)
        await bus.connect()
        consumer = DurableConsumer(
            conn, stream=STREAM, filter_subject=f"{PREFIX}.>", durable="bench", handler=probe.on_event
        )
        await consumer.start()
        log(f"{name}: running {total} events")
        requester = asyncio.create_task(request_loop(Client(runtime.connection), probe))
        producer = asyncio.create_task(produce(bus, probe, total, at_fault))
        fault_due = asyncio.ensure_future(at_fault.wait())
        await asyncio.wait({producer, fault_due}, return_when=asyncio.FIRST_COMPLETED)
        if producer.done():
            producer.result()  # it failed before the fault: show why
        log(f"{name}: fault after {len(probe.acked)} events")
        answered_at, election_ms = await fault(conn)
        first_after = len(probe.acked)
        await producer
        probe.stop.set()
        await requester
        with contextlib.suppress(TimeoutError):  # what never arrived is counted as lost below
            await asyncio.wait_for(probe.all_seen.wait(), 30)
        await consumer.stop()
        info = await conn.jetstream.stream_info(STREAM)
    seen_after = [probe.first_seen[i] for i in range(first_after, total) if i in probe.first_seen]
    resume_ms = (min(seen_after) - answered_at) * 1000 if seen_after else float("nan")
    return {
        "scenario": name,
        "events": total,
        "stall_ms": probe.stall_ms(),
        "election_ms": election_ms,
        "resume_ms": max(resume_ms, 0.0),
        "requests_failed": probe.request_errors,
        "lost": sum(1 for i, _ in probe.acked if i not in probe.received),
        "duplicated": int(info.state.messages) - total,
        "redelivered": sum(count - 1 for count in probe.received.values() if count > 1),
    }


async def run_cluster(total: int) -> dict[str, Any]:
    """The cluster scenario: SIGKILL the stream leader."""
    with NatsCluster(3) as cluster:
        import nats

        observer = await nats.connect(servers=cluster.urls, reconnect_time_wait=0.1, max_reconnect_attempts=-1)

        async def fault(_conn: ConnectionManager) -> tuple[float, float | None]:
            leader = await cluster.stream_leader(observer, STREAM)
            loop = asyncio.get_running_loop()
            killed = loop.time()
            await asyncio.to_thread(cluster.kill, leader)
            await leader_elected(observer, STREAM, cluster.node_name(leader))
            elected = loop.time()
            return elected, (elected - killed) * 1000  # the killed node stays down: a real node loss

        try:
            return await scenario("cluster (R3, leader SIGKILLed)", cluster.urls, 3, fault, total)
        finally:
            await observer.close()


async def run_single(total: int) -> dict[str, Any]:
    """The single-server scenario: SIGKILL the server and start it again."""
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=store) as server:

        async def fault(_conn: ConnectionManager) -> tuple[float, None]:
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)  # returns once the server accepts clients
            return asyncio.get_running_loop().time(), None

        return await scenario("single server (SIGKILL + restart)", [server.url], 1, fault, total)


def main() -> None:
    """Parse options, run the scenarios, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per scenario (default 3000)")
    parser.add_argument("--only", choices=["cluster", "single"], action="append", help="run one scenario")
    args = parser.parse_args()
    warm_allocator()
    quiet_logging()
    chosen = args.only or ["cluster", "single"]
    results = []
    if "cluster" in chosen:
        results.append(asyncio.run(run_cluster(args.events)))
    if "single" in chosen:
        results.append(asyncio.run(run_single(args.events)))

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    rows = [
        [
            r["scenario"],
            str(r["events"]),
            ms(r["stall_ms"]),
            ms(r["election_ms"]),
            ms(r["resume_ms"]),
            str(r["requests_failed"]),
            str(r["lost"]),
            str(r["duplicated"]),
            str(r["redelivered"]),
        ]
        for r in results
    ]
    headers = [
        "scenario",
        "events",
        "publish stall ms",
        "election ms",
        "consumer resume ms",
        "requests failed",
        "lost",
        "duplicated",
        "redelivered",
    ]
    print_table(headers, rows)
    print(f"\n{machine_note()}")


if __name__ == "__main__":
    main()
