"""Jobs side by side: shipkit against arq, Dramatiq, taskiq and Celery on Redis, one run, alternating.

Run (not part of the test suite; starts its own nats-server and redis-server)::

    .venv/bin/python bench/bench_jobs_peers.py --jobs 5000 --repeat 3
    .venv/bin/python bench/bench_jobs_peers.py --jobs 1000 --repeat 1 --systems shipkit,arq

The workload of every system: ``--jobs`` jobs with payload ``{"i": i, "s": 64 chars}``, the job
returns ``{"i": i}``, submitted in bulk by one producer, results stored by the system's own
result mechanism, timed from the first submit to the last result visible to the producer; 1 and
2 worker processes; systems alternate (A B C A B C ...) and the median of ``--repeat`` runs is
reported with the CPU per job of the server (nats-server or redis-server), the worker processes
and the producer (from ``/proc``), and the submit -> result p50 of ``--latency`` jobs submitted
one at a time.

Durability: shipkit on JetStream file storage with events on; the Redis peers on a redis-server
started here on a loopback port with ``appendonly yes``, ``appendfsync everysec``; Celery with
``acks_late``. Python packages come from the ``bench`` extra, one venv for all five systems::

    .venv/bin/pip install -e '.[bench]'

A system whose package is missing is skipped with a line saying which package, and the Redis peers
are skipped when no ``redis-server`` is on PATH (``apt-get install redis-server``).

Versions: arq (0.28.0, its newest) pins redis-py < 6, and the extra holds the newest of the others
that accept that: taskiq-redis 1.0.x with taskiq < 0.13, Celery < 5.7 (5.6.3, kombu 5.6.2) and
redis-py 5.3.x; Dramatiq is at its newest. So the table compares arq 0.28, Dramatiq 2.2, taskiq 0.12,
Celery 5.6 (what ``pip install -e '.[bench]'`` picks today). Installing a newer Celery (5.7),
taskiq (0.13) or taskiq-redis (1.1+) into the same venv pulls redis-py >= 6, which arq does not
accept.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import print_table, process_cpu_s, quiet_logging, spawn_ready, stop_children, warm_allocator

PAYLOAD_S = "x" * 64
REQUIRES = {
    "shipkit": (),
    "arq": ("arq", "redis"),
    "dramatiq": ("dramatiq", "redis"),
    "taskiq": ("taskiq", "taskiq_redis"),
    "celery": ("celery", "redis"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_modules(system: str) -> list[str]:
    """The Python modules ``system`` needs that are not installed."""
    return [name for name in REQUIRES[system] if importlib.util.find_spec(name) is None]


# -- one module-level app per system, built from the URL in the environment (children import it) --

URL = os.environ.get("PEERS_URL", "")
# shipkit's queue: a fresh one per timed run, so reading "every complete result" reads this run's only
QUEUE = os.environ.get("PEERS_QUEUE", "peers")
RUNS = 0


def echo_sync(payload: dict[str, Any]) -> dict[str, Any]:
    """The job of every system."""
    return {"i": payload["i"]}


async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """The job of every asyncio system."""
    return {"i": payload["i"]}


def _dramatiq() -> Any:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker = RedisBroker(url=URL)
    broker.add_middleware(Results(backend=RedisBackend(url=URL)))
    dramatiq.set_broker(broker)
    return dramatiq.actor(echo_sync, actor_name="echo", store_results=True, max_retries=3), broker


def _taskiq() -> Any:
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

    broker = ListQueueBroker(URL).with_result_backend(RedisAsyncResultBackend(URL))
    return broker.task(task_name="echo")(echo), broker


def _celery() -> Any:
    from celery import Celery

    app = Celery("peers", broker=URL, backend=URL)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=16, result_expires=3600)
    return app.task(name="echo")(echo_sync), app


# -- workers (child processes) --------------------------------------------------------------------


async def _wait_stdin() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run_worker(system: str, concurrency: int) -> None:
    """Run ``system``'s worker until stdin closes; print READY once it takes jobs."""
    if system == "shipkit":
        from shipkit.config import NatsConfig
        from shipkit.jobs import JobQueue, JobWorker, JobWorkerSpec

        async with JobQueue(NatsConfig.from_url(URL, request_timeout_s=10.0), name=QUEUE) as queue:
            spec = JobWorkerSpec.from_function(echo, worker="echo", concurrency=concurrency)
            async with JobWorker(queue, spec):
                print("READY", flush=True)
                await _wait_stdin()
    elif system == "arq":
        from arq.connections import RedisSettings
        from arq.worker import Worker, func

        async def arq_echo(ctx: dict[str, Any], payload: Any) -> Any:  # arq wants a coroutine function
            return await echo(payload)

        worker = Worker(
            functions=[func(arq_echo, name="echo")],
            redis_settings=RedisSettings.from_dsn(URL),
            max_jobs=concurrency,
            handle_signals=False,
            keep_result=3600,
            poll_delay=0.005,  # arq's default 0.5 s poll would put half a second into every latency sample
        )
        task = asyncio.create_task(worker.async_run())
        print("READY", flush=True)
        await _wait_stdin()
        await worker.close()
        task.cancel()
    elif system == "dramatiq":
        import dramatiq

        _, broker = _dramatiq()
        worker = dramatiq.Worker(broker, worker_threads=8)
        worker.start()
        print("READY", flush=True)
        await _wait_stdin()
        worker.stop()
    elif system == "taskiq":
        from taskiq.api import run_receiver_task

        _, broker = _taskiq()
        await broker.startup()
        task = asyncio.create_task(run_receiver_task(broker, max_async_tasks=concurrency))
        print("READY", flush=True)
        await _wait_stdin()
        task.cancel()
        await broker.shutdown()
    elif system == "celery":
        _, app = _celery()
        worker = app.Worker(pool="threads", concurrency=8, loglevel="WARNING", without_heartbeat=True)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, worker.start)
        print("READY", flush=True)  # celery connects within its own start; its first jobs wait for it
        await _wait_stdin()
        worker.stop()
        await future


# -- producers (this process) ---------------------------------------------------------------------


async def produce(system: str, payloads: list[dict[str, Any]]) -> None:
    """Submit every payload in bulk, then wait until every result is visible here."""
    if system == "shipkit":
        from shipkit.jobs import JobQueue

        async with JobQueue(URL, name=QUEUE) as queue:
            already = (await queue.counts()).complete
            await queue.submit_many(payloads, "echo")
            while (await queue.counts()).complete < already + len(payloads):  # noqa: ASYNC110 - other processes' work
                await asyncio.sleep(0.01)
            results = [job.result for job in await queue.list("complete")]  # every result, one pass
            assert len(results) >= len(payloads)
    elif system == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        pool = await create_pool(RedisSettings.from_dsn(URL))
        jobs = await asyncio.gather(*(pool.enqueue_job("echo", p) for p in payloads))
        await asyncio.gather(*(job.result(timeout=300, poll_delay=0.01) for job in jobs if job is not None))
        await pool.aclose()
    elif system == "taskiq":
        task, broker = _taskiq()
        await broker.startup()
        sent = await asyncio.gather(*(task.kiq(p) for p in payloads))
        for start in range(0, len(sent), 256):  # 5 000 pollers at once exhaust taskiq-redis's connection pool
            await asyncio.gather(*(s.wait_result(check_interval=0.01, timeout=300) for s in sent[start : start + 256]))
        await broker.shutdown()
    else:
        await asyncio.to_thread(_produce_sync, system, payloads)


def _produce_sync(system: str, payloads: list[dict[str, Any]]) -> None:
    if system == "dramatiq":
        actor, _ = _dramatiq()
        messages = [actor.send(p) for p in payloads]
        for message in messages:
            message.get_result(block=True, timeout=300_000)
    elif system == "celery":
        task, _ = _celery()
        results = [task.delay(p) for p in payloads]
        for result in results:
            result.get(timeout=300)


async def latency_ms(system: str, count: int) -> float:
    """Median submit -> result visible here, one job at a time."""
    samples: list[float] = []

    async def timed(one: Callable[[int], Any]) -> None:
        for i in range(count + 1):
            start = time.perf_counter()
            await one(i)
            if i:  # the first one warms connections and caches
                samples.append((time.perf_counter() - start) * 1000)

    if system == "shipkit":
        from shipkit.jobs import JobQueue

        async with JobQueue(URL, name=QUEUE) as queue:
            await timed(lambda i: _shipkit_one(queue, i))
    elif system == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        pool = await create_pool(RedisSettings.from_dsn(URL))

        async def one(i: int) -> None:
            job = await pool.enqueue_job("echo", {"i": i, "s": PAYLOAD_S})
            assert job is not None
            await job.result(timeout=30, poll_delay=0.001)

        await timed(one)
        await pool.aclose()
    elif system == "taskiq":
        task, broker = _taskiq()
        await broker.startup()

        async def one_taskiq(i: int) -> None:
            sent = await task.kiq({"i": i, "s": PAYLOAD_S})
            await sent.wait_result(check_interval=0.001, timeout=30)

        await timed(one_taskiq)
        await broker.shutdown()
    else:
        return await asyncio.to_thread(_latency_sync, system, count)
    return statistics.median(samples)


async def _shipkit_one(queue: Any, i: int) -> None:
    handle = await queue.submit({"i": i, "s": PAYLOAD_S}, "echo")
    await handle.result(timeout_s=30)


def _latency_sync(system: str, count: int) -> float:
    samples = []
    send: Callable[[dict[str, Any]], Any]
    if system == "dramatiq":
        actor, _ = _dramatiq()
        send = lambda p: actor.send(p).get_result(block=True, timeout=30_000)  # noqa: E731
    else:
        task, _ = _celery()
        send = lambda p: task.delay(p).get(timeout=30, interval=0.001)  # noqa: E731
    for i in range(count + 1):
        start = time.perf_counter()
        send({"i": i, "s": PAYLOAD_S})
        if i:
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


# -- the driver -----------------------------------------------------------------------------------


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """redis-server on a free loopback port with AOF everysec; None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start listening within 10 s")


def spawn_worker(system: str, url: str, concurrency: int) -> subprocess.Popen[str]:
    """A worker child of ``system``; returns once it printed READY."""
    env = {**os.environ, "PEERS_URL": url, "PEERS_QUEUE": QUEUE}
    args = [sys.executable, __file__, "--role", "worker", "--system", system, "--concurrency", str(concurrency)]
    return spawn_ready(args, env=env, what=f"{system} worker")


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    """Close the children's stdin (their stop signal); kill any that does not exit."""
    stop_children(procs)


def release_results() -> None:
    """Collect the cycles a run left, while its server still runs and outside the timed part.

    Celery's ``AsyncResult`` objects sit in reference cycles and unsubscribe from Redis when freed:
    left to the collector they would do so during another system's run, or at exit after
    redis-server stopped, where each retries the connection for about 20 s.
    """
    gc.collect()


def measure(
    system: str, url: str, server_pid: int | None, jobs: int, processes: int, concurrency: int
) -> dict[str, float]:
    """One timed run: jobs/s and CPU µs per job of server / workers / producer."""
    global URL, QUEUE, RUNS
    URL = url
    RUNS += 1
    QUEUE = f"peers{RUNS}"
    procs = [spawn_worker(system, url, concurrency) for _ in range(processes)]
    try:
        payloads = [{"i": i, "s": PAYLOAD_S} for i in range(jobs)]
        before = (process_cpu_s(server_pid), sum(process_cpu_s(p.pid) for p in procs), time.process_time())
        start = time.perf_counter()
        asyncio.run(produce(system, payloads))
        elapsed = time.perf_counter() - start
        after = (process_cpu_s(server_pid), sum(process_cpu_s(p.pid) for p in procs), time.process_time())
    finally:
        release_results()
        stop_workers(procs)
    cpu = [(b - a) * 1e6 / jobs for a, b in zip(before, after, strict=True)]
    return {"rate": jobs / elapsed, "server_us": cpu[0], "workers_us": cpu[1], "producer_us": cpu[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["driver", "worker"], default="driver")
    parser.add_argument("--system", default="shipkit")
    parser.add_argument("--systems", default="shipkit,dramatiq,arq,taskiq,celery")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=int, default=200, help="jobs timed one at a time for the p50 (0: skip)")
    args = parser.parse_args()
    warm_allocator()
    quiet_logging()
    if args.role == "worker":
        asyncio.run(run_worker(args.system, args.concurrency))
        return
    from shipkit.server import NatsServer

    systems = []
    for system in args.systems.split(","):
        if system not in REQUIRES:
            parser.error(f"unknown system {system!r}; choose from {', '.join(REQUIRES)}")
        lacking = missing_modules(system)
        if lacking:
            print(f"skipping {system}: Python package(s) {', '.join(lacking)} not installed (the `bench` extra)")
        else:
            systems.append(system)
    with tempfile.TemporaryDirectory(prefix="peers-redis-") as directory, NatsServer() as nats_server:
        redis = start_redis(directory) if any(s != "shipkit" for s in systems) else None
        if redis is None and any(s != "shipkit" for s in systems):
            print("skipping the Redis peers: no redis-server on PATH (apt-get install redis-server)")
            systems = [s for s in systems if s == "shipkit"]
        urls = {s: nats_server.url if s == "shipkit" else redis[1] for s in systems}  # type: ignore[index]
        pids = {s: nats_server._process.pid if s == "shipkit" else redis[0].pid for s in systems}  # type: ignore[union-attr,index]
        try:
            rows = run_all(systems, urls, pids, args)
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait(10)
    print_table(
        [
            "system",
            "1 worker process",
            "2 worker processes",
            "CPU µs/job server / workers / producer (1 w)",
            "submit→result p50",
        ],
        rows,
    )


def run_all(systems: list[str], urls: dict[str, str], pids: dict[str, int], args: Any) -> list[list[str]]:
    """Alternate systems per repeat and process count; one table row per system."""
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for processes in (1, 2):
        for run in range(args.repeat):
            for system in systems:
                row = measure(system, urls[system], pids[system], args.jobs, processes, args.concurrency)
                results.setdefault((system, processes), []).append(row)
                print(f"  {system:9} {processes}p run {run + 1}: {row['rate']:7.0f} jobs/s", flush=True)
    rows = []
    for system in systems:
        global URL, QUEUE
        URL = urls[system]
        QUEUE = "peers_latency"
        p50: float | None = None
        if args.latency > 0:  # 0: skip the latency pass
            procs = [spawn_worker(system, urls[system], args.concurrency)]
            try:
                p50 = asyncio.run(latency_ms(system, args.latency))
            finally:
                release_results()
                stop_workers(procs)
        one, two = results[(system, 1)], results[(system, 2)]
        cpu = " / ".join(
            f"{statistics.median(r[k] for r in one):.0f}" for k in ("server_us", "workers_us", "producer_us")
        )
        rows.append([
            system,
            f"{statistics.median(r['rate'] for r in one):.0f}",
            f"{statistics.median(r['rate'] for r in two):.0f}",
            cpu,
            f"{p50:.1f} ms" if p50 is not None else "-",
        ])  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
