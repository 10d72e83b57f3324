"""Job queue benchmark: end-to-end jobs/s against the raw JetStream ceiling, and latency at scale.

Run (starts its own nats-server; not part of the test suite)::

    .venv/bin/python bench/bench_jobs.py                 # throughput + scale, defaults below
    .venv/bin/python bench/bench_jobs.py --jobs 5000 --repeat 3 --scale 100000

1. Throughput. N jobs submitted (``submit_many``, pipelined) to 1 and then 2 worker processes
   (``JobWorker``, concurrency 64 each, events on, file storage: everything durable) and timed
   from the first submit to the last ``complete`` record. In the same run and the same way, the
   raw ceiling: the same N payloads published with nats-py (pipelined) to a work-queue stream
   and pull-consumed + acked by 1 or 2 nats-py processes (``fetch(100)``). Variants alternate
   (A B A B ...) and the median of ``--repeat`` runs is reported with the ratio.
   With ``--floor``, the same jobs through raw record protocols written by hand in nats-py (no
   shipkit), to show how much of the gap to the ceiling is the protocol (writes per job) and how
   much is the framework. ``full`` writes what a shipkit job writes: the submitter creates the
   record (compare-and-set on "new"), publishes the dispatch and a ``job.queued`` event; the
   consumer sets the record ``running`` and then ``complete`` with the result (each a
   compare-and-set on the revision before), publishes ``job.running`` and ``job.complete``, and
   acks. ``minimal``: the dispatch message is the queued record and the consumer only creates
   the ``complete`` record and acks. The others add one piece back (``FLOOR_PROTOCOLS``); the
   ``+fast`` ones publish the events as one ADR-50 fast-ingest batch per process (nats-server
   2.14+, a stream with ``allow_batched``: the server acknowledges every 64 messages instead of
   each one).
2. Scale. ``submit``, ``claim`` and ``counts`` latency (median of many calls) with 100 and with
   ``--scale`` jobs already queued.

Every process allocates and frees 1 MiB at start (see PERFORMANCE-NOTES: allocator state).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import nats
import structlog
from _common import process_cpu_s, spawn_ready, stop_children
from nats.js import api

from shipkit.config import NatsConfig
from shipkit.jobs import JobQueue, JobWorker, JobWorkerSpec
from shipkit.server import NatsServer

RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "bench.raw.work"
FLOOR_BUCKET = "BENCH_FLOOR"  # the records of the raw record protocol (--floor)
FLOOR_EVENTS = "BENCH_FLOOR_EVENTS"
SERVER_PID: int | None = None  # set when this script started the server: its CPU is reported too
LEVELS = 3  # priority levels the job workers serve (--priority-levels; 3 is the default of job_worker)


class CpuMeter:
    """CPU per message of the server, the child processes and this process over one measurement."""

    def __init__(self, children: list[subprocess.Popen[str]]) -> None:
        self._pids = [proc.pid for proc in children]
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return (process_cpu_s(SERVER_PID), sum(process_cpu_s(pid) for pid in self._pids), time.process_time())

    def per_message_us(self, count: int) -> dict[str, float]:
        """``{server, children, driver}``: microseconds of CPU per message since construction."""
        end = self._sample()
        keys = ("server", "children", "driver")
        return {key: (b - a) / count * 1e6 for key, a, b in zip(keys, self._start, end, strict=True)}


def _cpu_text(cpu: dict[str, float]) -> str:
    server, children, driver = cpu["server"], cpu["children"], cpu["driver"]
    return f"cpu/msg: server {server:4.0f} us, consumers {children:4.0f} us, driver {driver:4.0f} us"


def _quiet() -> None:
    bytearray(1 << 20)  # allocate and free 1 MiB once: the same allocator state in every process
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


# -- child processes ------------------------------------------------------------------------


async def run_job_worker(url: str, queue_name: str, concurrency: int, events: bool, levels: int = 3) -> None:
    """A JobWorker process: echo handler, runs until stdin closes."""

    async def echo(payload: Any) -> Any:
        return payload

    config = NatsConfig.from_url(url, request_timeout_s=10.0)
    async with JobQueue(config, name=queue_name, events=events) as queue:
        spec = JobWorkerSpec.from_function(echo, worker="bench", concurrency=concurrency, priority_levels=levels)
        worker = JobWorker(queue, spec)
        await worker.start()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await worker.stop(5)


async def run_raw_consumer(url: str, consumer: str) -> None:
    """A raw nats-py pull consumer: fetch(100) + ack, until stdin closes."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(consumer, stream=RAW_STREAM)
    print("READY", flush=True)
    stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    while not stop.done():
        try:
            msgs = await sub.fetch(100, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            json.loads(msg.data)
            await msg.ack()
    await nc.close()


FLOOR_PROTOCOLS = {
    # name: (record created at submit, running record written, job.* events: "" none, "acked", "fast")
    "full": (True, True, "acked"),  # what shipkit writes: 7 writes per job
    "full+fast": (True, True, "fast"),
    "record+events": (True, False, "acked"),
    "minimal+running": (False, True, ""),
    "minimal+events": (False, False, "acked"),
    "minimal+fast": (False, False, "fast"),
    "minimal": (False, False, ""),  # the dispatch message is the queued record: 2 writes per job
}
FAST_FLOW = 64  # the fast-ingest batch's requested ack interval (messages)


class FastIngest:
    """Events as one ADR-50 fast-ingest batch (nats-server 2.14+, ``allow_batched``): no ack per message.

    The server acknowledges every ``flow`` messages on one inbox; a publisher more than two flow
    windows ahead of the last acknowledgement waits. (A bench floor: a gap or an error answer ends
    the run, raised by the next publish or by ``close``; nothing is re-sent.)
    """

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._id = os.urandom(8).hex()
        self._inbox = f"{nc.new_inbox()}.{self._id}"
        self._seq = 0
        self._acked = 0
        self._flow = FAST_FLOW
        self._progress = asyncio.Event()
        self._started: asyncio.Future[None] | None = None
        self._commit: asyncio.Future[Any] | None = None
        self._failed: str | None = None

    @classmethod
    async def open(cls, nc: Any) -> FastIngest:
        """A publisher listening for its batch's answers."""
        fast = cls(nc)
        await nc.subscribe(f"{fast._inbox}.>", cb=fast._on_reply)
        return fast

    async def _on_reply(self, msg: Any) -> None:
        answer = json.loads(msg.data)
        if answer.get("type") == "ack":
            self._acked, self._flow = max(self._acked, answer["seq"]), answer["msgs"] or self._flow
            self._progress.set()
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
        elif answer.get("type") == "gap" or "error" in answer:
            self._failed = f"fast batch {self._id}: {answer}"  # raised by the next publish or close
            self._progress.set()
        elif self._commit is not None and not self._commit.done():
            self._commit.set_result(answer)

    def _reply(self, op: int) -> str:
        return f"{self._inbox}.{FAST_FLOW}.fail.{self._seq}.{op}.$FI"

    def _check(self) -> None:
        if self._failed is not None:
            raise RuntimeError(self._failed)

    async def publish(self, subject: str, data: bytes) -> None:
        self._check()
        if self._started is None:  # the first message starts the batch: nothing more before its answer
            self._started = asyncio.get_running_loop().create_future()
            self._seq = 1
            await self._nc.publish(subject, data, reply=self._reply(0))
            await asyncio.wait_for(self._started, 10)
            return
        if not self._started.done():
            await asyncio.wait_for(asyncio.shield(self._started), 10)
        while self._seq - self._acked >= 2 * self._flow:
            self._progress.clear()
            await asyncio.wait_for(self._progress.wait(), 10)
            self._check()
        self._seq += 1
        await self._nc.publish(subject, data, reply=self._reply(1))

    async def close(self) -> None:
        self._check()
        if self._seq:
            self._commit = asyncio.get_running_loop().create_future()
            self._seq += 1
            await self._nc.publish("bench.floor.events.eob", b"", reply=self._reply(3))
            await asyncio.wait_for(self._commit, 10)


EXPECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


async def _raw_consumer(js: Any, consumer: str) -> str:
    """Create durable ``consumer`` on the raw stream, filtered to its own subject; that subject."""
    subject = f"{RAW_SUBJECT}.{consumer}"
    config = api.ConsumerConfig(durable_name=consumer, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT)
    await js.add_consumer(RAW_STREAM, config)
    return subject


async def _until_drained(js: Any, consumer: str) -> None:
    """Return once every message of ``consumer`` was delivered and acked (by other processes)."""
    while True:
        info = await js.consumer_info(RAW_STREAM, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.01)


async def run_floor_consumer(url: str, consumer: str, protocol: str) -> None:
    """A raw record protocol's worker: fetch(100), then per job (concurrently) its writes and the ack.

    Record writes are awaited (each is a compare-and-set on the revision before it); events are
    pipelined (``publish_async``) and confirmed before the ack.
    """
    _, running, events = FLOOR_PROTOCOLS[protocol]
    nc = await nats.connect(url)
    js = nc.jetstream()
    fast = await FastIngest.open(nc) if events == "fast" else None

    async def event(subject: str, data: bytes) -> Any:
        if fast is not None:
            await fast.publish(subject, data)
            return None
        return await js.publish_async(subject, data)

    sub = await js.pull_subscribe_bind(consumer, stream=RAW_STREAM)
    print("READY", flush=True)
    stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    async def one(msg: Any) -> None:
        body = json.loads(msg.data)
        job_id, record, rev = body["id"], body["job"], body["rev"]
        subject = f"$KV.{FLOOR_BUCKET}.job.{job_id}"
        sent = []
        if running:
            record["state"] = "running"
            ack = await js.publish(subject, json.dumps(record).encode(), headers={EXPECT_SEQ: str(rev)})
            rev = ack.seq
            if events:
                sent.append(await event("bench.floor.events.job.running", b'{"id":"%s"}' % job_id.encode()))
        record["state"], record["result"] = "complete", record["payload"]
        await js.publish(subject, json.dumps(record).encode(), headers={EXPECT_SEQ: str(rev)})
        if events:
            sent.append(await event("bench.floor.events.job.complete", b'{"id":"%s"}' % job_id.encode()))
        sent = [future for future in sent if future is not None]
        if sent:
            await asyncio.gather(*sent)
        await msg.ack()

    while not stop.done():
        try:
            msgs = await sub.fetch(100, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        await asyncio.gather(*(one(msg) for msg in msgs))
    if fast is not None:
        await fast.close()
    await nc.close()


async def measure_floor(url: str, jobs: int, processes: int, run: int, protocol: str) -> tuple[float, dict[str, float]]:
    """Seconds for ``jobs`` jobs through the raw record protocol ``protocol`` (see the module docstring)."""
    record_at_submit, _, events = FLOOR_PROTOCOLS[protocol]
    nc = await nats.connect(url)
    js = nc.jetstream()
    fast = await FastIngest.open(nc) if events == "fast" else None
    consumer = f"floor_{protocol.replace('+', '_')}{run}p{processes}"
    subject = await _raw_consumer(js, consumer)
    procs = [
        spawn("--role", "floor", "--url", url, "--consumer", consumer, "--protocol", protocol) for _ in range(processes)
    ]
    try:
        ids = [f"{consumer}-{i}".encode() for i in range(jobs)]
        records = [
            json.dumps({"id": job_id.decode(), "state": "queued", "payload": {"n": i, "data": "x" * 64}}).encode()
            for i, job_id in enumerate(ids)
        ]
        meter = CpuMeter(procs)
        start = time.perf_counter()
        for chunk in range(0, jobs, 256):
            part = list(zip(ids[chunk : chunk + 256], records[chunk : chunk + 256], strict=True))
            revisions = [0] * len(part)
            if record_at_submit:
                creates = await asyncio.gather(
                    *(
                        js.publish(f"$KV.{FLOOR_BUCKET}.job.{job_id.decode()}", record, headers={EXPECT_SEQ: "0"})
                        for job_id, record in part
                    )
                )
                revisions = [ack.seq for ack in creates]
            sends = [
                js.publish(subject, b'{"id":"%s","rev":%d,"job":%s}' % (job_id, revision, record))
                for (job_id, record), revision in zip(part, revisions, strict=True)
            ]
            if events == "acked":
                sends += [js.publish("bench.floor.events.job.queued", b'{"id":"%s"}' % job_id) for job_id, _ in part]
            elif events == "fast":
                for job_id, _ in part:
                    await fast.publish("bench.floor.events.job.queued", b'{"id":"%s"}' % job_id)
            await asyncio.gather(*sends)
        await _until_drained(js, consumer)
        elapsed = time.perf_counter() - start
        cpu = meter.per_message_us(jobs)
    finally:
        finish(procs)
        if fast is not None:
            await fast.close()
        await nc.close()
    return elapsed, cpu


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start this script in a child role and wait for READY."""
    return spawn_ready([sys.executable, __file__, *args], what=f"child {args}")


def finish(procs: list[subprocess.Popen[str]]) -> None:
    """Close the children's stdin (their stop signal) and wait for them."""
    stop_children(procs)


# -- measurements ---------------------------------------------------------------------------


async def measure_jobs(
    url: str, jobs: int, processes: int, concurrency: int, run: int, events: bool
) -> tuple[float, dict[str, float]]:
    """Seconds from first submit to last complete with ``processes`` JobWorker processes, and CPU per job."""
    name = f"bench{run}p{processes}{'e' if events else 'n'}"
    flag = "--events" if events else "--no-events"
    async with JobQueue(url, name=name, events=events) as queue:
        procs = [
            spawn(
                "--role",
                "worker",
                "--url",
                url,
                "--queue",
                name,
                "--concurrency",
                str(concurrency),
                flag,
                "--priority-levels",
                str(LEVELS),
            )
            for _ in range(processes)
        ]
        try:
            payloads = [{"n": i, "data": "x" * 64} for i in range(jobs)]
            meter = CpuMeter(procs)
            start = time.perf_counter()
            await queue.submit_many(payloads, "bench")
            while (await queue.counts()).complete < jobs:  # noqa: ASYNC110 - polling another process's work
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
            cpu = meter.per_message_us(jobs)
        finally:
            finish(procs)
    return elapsed, cpu


async def latency(url: str, count: int, events: bool) -> dict[str, float]:
    """Submit -> result visible to the submitter, one job at a time, one worker process: p50 / p90 in ms."""
    name = f"latency{'e' if events else 'n'}"
    flag = "--events" if events else "--no-events"
    async with JobQueue(url, name=name, events=events) as queue:
        procs = [spawn("--role", "worker", "--url", url, "--queue", name, flag, "--priority-levels", str(LEVELS))]
        try:
            await (await queue.submit({"warm": True}, "bench")).result(timeout_s=30)  # consumers, registry, caches
            samples = []
            for i in range(count):
                start = time.perf_counter()
                handle = await queue.submit({"n": i, "data": "x" * 64}, "bench")
                await handle.result(timeout_s=30)
                samples.append((time.perf_counter() - start) * 1000)
        finally:
            finish(procs)
    samples.sort()
    return {"p50_ms": samples[len(samples) // 2], "p90_ms": samples[int(len(samples) * 0.9)]}


async def measure_raw(url: str, jobs: int, processes: int, run: int) -> tuple[float, dict[str, float]]:
    """Seconds to publish ``jobs`` messages and have ``processes`` raw consumers ack them all."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    consumer = f"raw{run}p{processes}"
    subject = await _raw_consumer(js, consumer)
    procs = [spawn("--role", "raw", "--url", url, "--consumer", consumer) for _ in range(processes)]
    try:
        bodies = [json.dumps({"n": i, "data": "x" * 64}).encode() for i in range(jobs)]
        meter = CpuMeter(procs)
        start = time.perf_counter()
        for chunk in range(0, jobs, 256):
            await asyncio.gather(*(js.publish(subject, body) for body in bodies[chunk : chunk + 256]))
        await _until_drained(js, consumer)
        elapsed = time.perf_counter() - start
        cpu = meter.per_message_us(jobs)
    finally:
        finish(procs)
        await nc.close()
    return elapsed, cpu


async def throughput(
    url: str, jobs: int, repeat: int, concurrency: int, events: bool, floors: list[str]
) -> dict[str, Any]:
    """Alternate raw, shipkit and the ``floors`` (raw record protocols) for 1 and 2 processes; medians, ratios."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        api.StreamConfig(name=RAW_STREAM, subjects=[f"{RAW_SUBJECT}.>"], retention=api.RetentionPolicy.WORK_QUEUE)
    )
    if floors:
        await js.add_stream(
            api.StreamConfig(name=f"KV_{FLOOR_BUCKET}", subjects=[f"$KV.{FLOOR_BUCKET}.>"], max_msgs_per_subject=1)
        )
        # allow_batched (fast ingest, ADR-50) is newer than nats-py's StreamConfig: created through the API
        events_config = {"name": FLOOR_EVENTS, "subjects": ["bench.floor.events.>"], "allow_batched": True}
        answer = json.loads(
            (await nc.request(f"$JS.API.STREAM.CREATE.{FLOOR_EVENTS}", json.dumps(events_config).encode())).data
        )
        if "error" in answer:
            raise RuntimeError(f"create {FLOOR_EVENTS}: {answer['error']}")
    await nc.close()
    results: dict[str, Any] = {}
    for processes in (1, 2):
        times: dict[str, list[float]] = {"raw": [], "shipkit": [], **{name: [] for name in floors}}
        for run in range(repeat):
            pad = " " * len(str(processes))
            raw_time, raw_cpu = await measure_raw(url, jobs, processes, run)
            times["raw"].append(raw_time)
            print(f"  {processes}p run {run + 1}: raw {jobs / raw_time:8.0f} msg/s ({_cpu_text(raw_cpu)})", flush=True)
            job_time, job_cpu = await measure_jobs(url, jobs, processes, concurrency, run, events)
            times["shipkit"].append(job_time)
            print(f"  {pad}        shipkit {jobs / job_time:8.0f} jobs/s ({_cpu_text(job_cpu)})", flush=True)
            for name in floors:
                floor_time, floor_cpu = await measure_floor(url, jobs, processes, run, name)
                times[name].append(floor_time)
                print(f"  {pad}        {name:<16} {jobs / floor_time:8.0f} jobs/s ({_cpu_text(floor_cpu)})", flush=True)
        raw_rate = jobs / statistics.median(times["raw"])
        job_rate = jobs / statistics.median(times["shipkit"])
        row: dict[str, Any] = {"raw_msgs_per_s": raw_rate, "jobs_per_s": job_rate, "ratio": job_rate / raw_rate}
        row["floors"] = {name: jobs / statistics.median(times[name]) for name in floors}
        results[f"{processes}p"] = row
    return results


async def _median_ms(action: Any, count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def scale(url: str, queued: int) -> dict[str, float]:
    """submit / claim / counts latency (ms, median) with ``queued`` jobs waiting."""
    name = f"scale{queued}"
    async with JobQueue(url, name=name, events=True) as queue:
        for start in range(0, queued, 5000):
            await queue.submit_many([{"n": i} for i in range(start, min(start + 5000, queued))], "backlog")
        await queue.submit_many([{"n": i} for i in range(300)], "probe")
        submit_ms = await _median_ms(lambda: queue.submit({"x": 1}, "backlog"), 200)
        claim_ms = await _median_ms(lambda: queue.claim("backlog"), 200)
        counts_ms = await _median_ms(queue.counts, 100)
        counts = await queue.counts()
    return {"queued": counts.queued, "submit_ms": submit_ms, "claim_ms": claim_ms, "counts_ms": counts_ms}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["driver", "worker", "raw", "floor"], default="driver")
    parser.add_argument("--url", default=None, help="use this server instead of starting one")
    parser.add_argument("--queue", default="bench")
    parser.add_argument("--consumer", default="raw")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--events", action=argparse.BooleanOptionalAction, default=True, help="job.* events on")
    parser.add_argument("--priority-levels", type=int, default=3, help="priority levels the workers serve")
    parser.add_argument("--latency", type=int, default=300, help="jobs timed one at a time (0: skip)")
    parser.add_argument(
        "--floor",
        default="",
        help=f"also run these raw record protocols, comma-separated (see above): {', '.join(FLOOR_PROTOCOLS)} or all",
    )
    parser.add_argument("--protocol", default="full", help=argparse.SUPPRESS)  # the floor consumer's protocol
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    _quiet()
    global SERVER_PID, LEVELS
    LEVELS = args.priority_levels
    if args.role == "worker":
        await run_job_worker(args.url, args.queue, args.concurrency, args.events, args.priority_levels)
        return
    if args.role == "raw":
        await run_raw_consumer(args.url, args.consumer)
        return
    if args.role == "floor":
        await run_floor_consumer(args.url, args.consumer, args.protocol)
        return
    server = None if args.url else NatsServer().start()
    url = args.url or server.url  # type: ignore[union-attr]
    if server is not None and server._process is not None:
        SERVER_PID = server._process.pid
    try:
        print(f"nats-server {url}, python {sys.version.split()[0]}, {os.cpu_count()} cpus", flush=True)
        if not args.skip_throughput:
            print(
                f"throughput: {args.jobs} jobs, {args.repeat} runs, concurrency {args.concurrency}/process, "
                f"events {'on' if args.events else 'off'}"
            )
            floors = list(FLOOR_PROTOCOLS) if args.floor == "all" else [f for f in args.floor.split(",") if f]
            unknown = [name for name in floors if name not in FLOOR_PROTOCOLS]
            if unknown:
                parser.error(f"--floor: unknown protocol(s) {unknown}; choose from {list(FLOOR_PROTOCOLS)}")
            rows = await throughput(url, args.jobs, args.repeat, args.concurrency, args.events, floors)
            for key, row in rows.items():
                floor_text = "".join(
                    f", {name} {rate:.0f} jobs/s (ratio {rate / row['raw_msgs_per_s']:.2f})"
                    for name, rate in row["floors"].items()
                )
                print(
                    f"{key}: raw {row['raw_msgs_per_s']:.0f} msg/s, shipkit {row['jobs_per_s']:.0f} jobs/s, "
                    f"ratio {row['ratio']:.2f}{floor_text}",
                    flush=True,
                )
        if args.latency:
            row = await latency(url, args.latency, args.events)
            print(f"submit -> result, one at a time ({args.latency} jobs): p50 {row['p50_ms']:.2f} ms, "
                  f"p90 {row['p90_ms']:.2f} ms", flush=True)  # fmt: skip
        if not args.skip_scale:
            for queued in (100, args.scale):
                row = await scale(url, queued)
                print(
                    f"scale {queued:>7} queued: submit {row['submit_ms']:.2f} ms, claim {row['claim_ms']:.2f} ms, "
                    f"counts {row['counts_ms']:.2f} ms (counts.queued={row['queued']})",
                    flush=True,
                )
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
