"""Streamed replies: a shipkit async-generator handler vs raw nats-py publishing each chunk to the reply inbox.

Run from the repository root (not part of the test suite)::

    .venv/bin/python bench/bench_streaming.py            # 7 repeats x 200 streams of 1 000 chunks
    .venv/bin/python bench/bench_streaming.py --quick    # 2 repeats x 30 streams: a smoke run

Variants (the host runs in one spawned process, the caller in another; both warm the allocator):

- ``raw``: a nats-py responder that publishes ``f"tok{i}".encode()`` for i < 1 000 to the request's
  reply subject, then the empty terminator;
- ``shipkit``: ``@service.handler`` on an async generator yielding ``f"tok{i}"`` (encoded, chunk
  header on the first, backpressure check, terminator — the whole streaming path);
- ``shipkit+Client.stream``: the same host, read with ``Client.stream`` instead of the raw reader
  (what a shipkit caller pays on its side; informational, not part of the ratio).

The raw and shipkit rows use the same raw reader: a fresh inbox subscription per stream, a callback
counting chunks until the terminator. Per stream it records the time to the first chunk and to
the terminator; chunks/s is 1 000 / the latter. Variants alternate within every repeat (order
rotating); a repeat during which other processes took more than ``--quiet-cores`` cores is
repeated once. The table shows medians; the ratio is shipkit / raw chunks per second. The host's
CPU per chunk (``time.process_time()`` of the host process over the caller's whole run, warm-up
included) is the load-independent view of the same comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # the bench directory is not a package: imported from sys.path
    Child,
    ForeignLoad,
    embedded_server,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    machine_note,
    median,
    percentile,
    print_table,
    quiet_logging,
    warm_allocator,
)

CHUNKS = 1_000
SUBJECT = "bench.tokens"


def host_main(conn: Any, url: str, variant: str) -> None:
    """The host process: serve streams until told to stop."""
    warm_allocator()
    quiet_logging()
    asyncio.run(_host(conn, url, variant))


async def _host(conn: Any, url: str, variant: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), stop.set)  # any message from the parent means: stop
    if variant == "raw":
        import nats

        nc = await nats.connect(url)

        async def respond(msg: Any) -> None:
            for i in range(CHUNKS):
                await nc.publish(msg.reply, f"tok{i}".encode())
            await nc.publish(msg.reply, b"")

        await nc.subscribe(SUBJECT, queue="q", cb=respond)
        await nc.flush()
        conn.send("ready")
        cpu = time.process_time()
        await stop.wait()
        conn.send(time.process_time() - cpu)
        await nc.close()
        return
    from shipkit import Service
    from shipkit.service.runtime import Runtime

    service = Service("bench")

    @service.handler("tokens")
    async def tokens() -> AsyncIterator[str]:
        for i in range(CHUNKS):
            yield f"tok{i}"

    runtime = Runtime(service, url)
    await runtime.start()
    conn.send("ready")
    cpu = time.process_time()
    await stop.wait()
    conn.send(time.process_time() - cpu)
    await runtime.shutdown()


def caller_main(conn: Any, url: str, streams: int, use_client: bool) -> None:
    """The caller process: run ``streams`` streams one after the other, report timings."""
    warm_allocator()
    quiet_logging()
    conn.send(asyncio.run(_caller(url, streams, use_client)))


async def _raw_stream(nc: Any) -> tuple[float, float]:
    done = asyncio.Event()
    started = time.perf_counter()
    first = 0.0
    count = 0

    async def on_msg(msg: Any) -> None:
        nonlocal first, count
        if not msg.data:
            done.set()
            return
        if count == 0:
            first = time.perf_counter()
        count += 1

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    await nc.publish(SUBJECT, b"", reply=inbox)
    await asyncio.wait_for(done.wait(), 30)
    ended = time.perf_counter()
    await sub.unsubscribe()
    if count != CHUNKS:
        raise RuntimeError(f"received {count} chunks, expected {CHUNKS}")
    return first - started, ended - started


async def _client_stream(client: Any) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    count = 0
    async for _chunk in client.stream(SUBJECT, response_type=bytes):
        if count == 0:
            first = time.perf_counter()
        count += 1
    if count != CHUNKS:
        raise RuntimeError(f"received {count} chunks, expected {CHUNKS}")
    return first - started, time.perf_counter() - started


async def _caller(url: str, streams: int, use_client: bool) -> list[tuple[float, float]]:
    from shipkit import Client

    async with Client(url) as client:
        nc = client.connection.client
        run = (lambda: _client_stream(client)) if use_client else (lambda: _raw_stream(nc))
        for _ in range(3):  # warm-up
            await run()
        return [await run() for _ in range(streams)]


def measure(url: str, variant: str, streams: int) -> dict[str, float]:
    """One host + one caller process; medians of the caller's streams."""
    host = Child(host_main, url, "raw" if variant == "raw" else "shipkit", name=f"host-{variant}")
    stopped = False
    try:
        if host.recv(30) != "ready":
            raise RuntimeError("host did not start")
        caller = Child(caller_main, url, streams, variant == "shipkit+Client.stream", name=f"caller-{variant}")
        timings: list[tuple[float, float]] = caller.recv(600)
        caller.join()
        host.send("stop")
        stopped = True
        host_cpu_s: float = host.recv(30)
    finally:
        if not stopped:
            host.send("stop")
        host.join()
    firsts = sorted(t[0] for t in timings)
    totals = sorted(t[1] for t in timings)
    return {
        "chunks_per_s": CHUNKS / median(totals),
        "ttfc_p50_us": percentile(firsts, 50) * 1e6,
        "ttfc_p99_us": percentile(firsts, 99) * 1e6,
        "host_cpu_us_per_chunk": host_cpu_s / ((streams + 3) * CHUNKS) * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of 30 streams (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--streams", type=int, default=None, help="streams per measurement")
    parser.add_argument("--quiet-cores", type=float, default=0.15)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 7)
    streams = args.streams or (30 if args.quick else 200)
    variants = ["raw", "shipkit", "shipkit+Client.stream"]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    meter = ForeignLoad()
    with embedded_server() as server:
        for repeat in range(repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            for variant in order:
                for _attempt in range(2):
                    meter.start()
                    result = measure(server.url, variant, streams)
                    others = meter.stop()
                    if others <= args.quiet_cores:
                        break
                print(f"repeat {repeat + 1} {variant}: {fmt_rate(result['chunks_per_s'])} chunks/s", file=sys.stderr)
                results[variant].append(result)
    raw_rate = median([r["chunks_per_s"] for r in results["raw"]])
    rows = []
    for variant in variants:
        rate = median([r["chunks_per_s"] for r in results[variant]])
        rows.append(
            [
                variant,
                fmt_rate(rate),
                fmt_us(median([r["ttfc_p50_us"] for r in results[variant]])),
                fmt_us(median([r["ttfc_p99_us"] for r in results[variant]])),
                fmt_us(median([r["host_cpu_us_per_chunk"] for r in results[variant]])),
                fmt_ratio(rate / raw_rate),
            ]
        )
    print(f"{CHUNKS} chunks per stream, {streams} streams x {repeats} repeats; {machine_note()}\n")
    print_table(
        ["variant", "chunks/s", "first chunk p50 µs", "first chunk p99 µs", "host CPU µs/chunk", "vs raw"], rows
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
