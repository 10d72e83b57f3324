"""What the dashboard costs the NATS server with the page open on a 10 000-job queue.

    .venv/bin/python bench/bench_dashboard.py [--jobs 10000] [--seconds 60]

Starts an embedded nats-server, submits ``--jobs`` jobs to queue ``bench`` (no worker, so
nothing else talks to the server), starts the dashboard (the same :class:`Hub` and ASGI app
``shipkit dashboard`` serves, on uvicorn) and plays the page: the live feed open, the job list
fetched whenever it changes plus once a second. A raw subscriber on ``>`` counts, for
``--seconds``, every request the dashboard publishes (``$JS.API.>``, ``$SRV.>``); the
server's ``/connz`` gives the dashboard connection's messages in and out over the same window.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import nats
import uvicorn

from shipkit.config import NatsConfig
from shipkit.dashboard import DashboardSettings, Hub, create_app
from shipkit.jobs import JobQueue
from shipkit.server import NatsServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connz(monitor: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz", timeout=5) as response:
        return dict(json.load(response))


def _dashboard_conn(monitor: int) -> dict[str, Any]:
    return next(c for c in _connz(monitor)["connections"] if c.get("name") == "shipkit-dashboard")


def _kind(subject: str) -> str:
    parts = subject.split(".")
    if subject.startswith("$JS.API.DIRECT.GET"):
        return "$JS.API.DIRECT.GET"
    if subject.startswith("$JS.API."):
        return ".".join(parts[:4])
    return ".".join(parts[:2])


async def _play_page(url: str, stop: asyncio.Event) -> int:
    """The page's traffic: the live feed, and the job list on every change and every second."""
    fetches = 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def feed() -> None:
            async with client.stream("GET", "/api/live") as response:
                async for _ in response.aiter_lines():
                    if stop.is_set():
                        return

        live = asyncio.create_task(feed())
        while not stop.is_set():
            await client.get("/api/queues/bench/jobs", params={"limit": 25})
            await client.get("/api/queues/bench/jobs", params={"limit": 25, "state": "queued", "q": "9"})
            fetches += 2
            with contextlib.suppress(TimeoutError):  # a second passed: fetch again, as the page does
                await asyncio.wait_for(stop.wait(), 1.0)
        live.cancel()
    return fetches


async def main(jobs: int, seconds: float) -> None:
    monitor = _free_port()
    with TemporaryDirectory() as store, NatsServer(store_dir=Path(store), extra_args=["-m", str(monitor)]) as server:
        async with JobQueue(server.url, name="bench") as queue:
            for start in range(0, jobs, 1000):
                await queue.submit_many([{"n": i} for i in range(start, min(jobs, start + 1000))], "nobody")
            await queue.flush()
        settings = DashboardSettings(nats=NatsConfig.from_url(server.url))
        hub = Hub(settings)
        loaded = time.perf_counter()
        await hub.start()
        while "bench" not in hub.queues or len(hub.queues["bench"].index) < jobs:
            hub.changed.clear()
            await asyncio.wait_for(hub.changed.wait(), 60)
        load_s = time.perf_counter() - loaded
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound before serving: the page's first request waits in the backlog
        sock.listen(16)
        port = sock.getsockname()[1]
        web = uvicorn.Server(uvicorn.Config(create_app(settings, hub), log_level="warning"))
        web.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        serving = asyncio.create_task(web.serve(sockets=[sock]))

        spy = await nats.connect(server.url, name="spy")
        seen: Counter[str] = Counter()

        async def count(msg: Any) -> None:
            if msg.subject.startswith(("$JS.API.", "$SRV.")):
                seen[_kind(msg.subject)] += 1

        await spy.subscribe(">", cb=count)
        await spy.flush()
        stop = asyncio.Event()
        before = _dashboard_conn(monitor)
        page = asyncio.create_task(_play_page(f"http://127.0.0.1:{port}", stop))
        started = time.perf_counter()
        await asyncio.sleep(seconds)  # the measured window
        after = _dashboard_conn(monitor)
        elapsed = time.perf_counter() - started
        stop.set()
        fetches = await page
        await spy.close()
        web.should_exit = True
        await serving
        await hub.stop()

    total = sum(seen.values())
    print(f"| {jobs:,} jobs, page open {elapsed:.0f} s ({fetches} list fetches) | per second |")
    print("|---|---:|")
    for kind, n in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"| `{kind}` | {n / elapsed:.2f} |")
    print(f"| **requests to the server, all** | **{total / elapsed:.2f}** |")
    print(f"| messages the dashboard sent (connz in_msgs) | {(after['in_msgs'] - before['in_msgs']) / elapsed:.2f} |")
    print(f"| messages it received (connz out_msgs) | {(after['out_msgs'] - before['out_msgs']) / elapsed:.2f} |")
    print(f"| bytes it received (connz out_bytes) | {(after['out_bytes'] - before['out_bytes']) / elapsed:,.0f} |")
    print(f"\nindex of {jobs:,} jobs loaded in {load_s:.2f} s (once, at start)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.seconds))
