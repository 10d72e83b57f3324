"""A job worker process for the multi-process tests.

Prints ``READY`` once it takes jobs, ``START <id>`` when a handler begins and ``DONE <id>``
when it returns; SIGTERM stops it gracefully. Modes: ``echo`` returns at once, ``block``
never returns (to be killed), ``sleep`` waits ``--sleep-s`` seconds, ``checkpoint`` stores
three checkpoints, prints ``CHECKPOINTED <id>`` and blocks on a fresh start, and returns at
once when resuming (``job.resume_from`` set).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

import structlog

from shipkit.config import NatsConfig
from shipkit.jobs import JobContext, JobQueue, JobWorker, JobWorkerSpec


def say(*words: str) -> None:
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--mode", default="echo", choices=["echo", "block", "sleep", "checkpoint"])
    parser.add_argument("--sleep-s", type=float, default=0.0)
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--grace-s", type=float, default=5.0)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(os.environ.get("JOBS_WORKER_LOG_LEVEL", "WARNING").upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    async def handle(payload: Any, job: JobContext) -> Any:
        say("START", job.id)
        if args.mode == "checkpoint":
            if job.resume_from is not None:
                return {"resumed_from": job.resume_from, "attempt": job.attempt}
            for step in range(1, 4):
                await job.checkpoint({"step": step})
            say("CHECKPOINTED", job.id)
            await asyncio.Event().wait()
        if args.mode == "block":
            await asyncio.Event().wait()
        elif args.mode == "sleep":
            await asyncio.sleep(args.sleep_s)
        say("DONE", job.id)
        return {"echo": payload, "attempt": job.attempt}

    config = NatsConfig.from_url(args.url, reconnect_time_wait_s=0.2, request_timeout_s=5.0)
    spec = JobWorkerSpec.from_function(handle, worker=args.worker, concurrency=args.concurrency, lease_s=args.lease_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with JobQueue(config, source="worker-proc") as queue:
        worker = JobWorker(queue, spec)
        await worker.start()
        say("READY")
        await stop.wait()
        stats = await worker.stop(graceful_timeout_s=args.grace_s)
        say("STATS", str(stats.handled))


if __name__ == "__main__":
    asyncio.run(main())
