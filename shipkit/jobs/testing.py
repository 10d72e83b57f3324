"""Running one job worker function for real in a test: :func:`run_job` (re-exported by :mod:`shipkit.testing`).

No hand-written fake ``JobContext``: the function runs in a real :class:`JobWorker` on a
throw-away queue of the test's server, so progress, checkpoints, retries, timeouts and
``resume_from`` behave exactly as in production::

    async def test_training_resumes(shipkit_connection):
        job = await run_job(train, {"epochs": 3}, shipkit_connection, resume_from={"epoch": 2})
        assert job.state is JobState.COMPLETE and job.result == {"epochs_run": 1}
"""

from __future__ import annotations

import uuid
from typing import Any

import shipkit.jobs._transitions as step
from shipkit.connection import ConnectionManager
from shipkit.jobs.models import Backoff, Job, now_ms
from shipkit.jobs.queue import JobQueue
from shipkit.jobs.worker import JobWorker
from shipkit.jobs.worker_spec import JobHandler, JobWorkerSpec

__all__ = ["run_job"]


async def run_job(
    func: JobHandler,
    payload: Any,
    connection: ConnectionManager,
    *,
    resume_from: Any = None,
    max_attempts: int = 1,
    backoff: Backoff | None = None,
    timeout_s: float | None = None,
    wait_s: float = 30.0,
    extra: Any = None,
) -> Job:
    """Run ``func`` on ``payload`` as a job and return the finished record (complete, failed, dead, ...).

    Args:
        func: the job worker function (as decorated with ``@service.job_worker``).
        payload: the payload to submit (validated by the function's payload type, as in production).
        connection: the test's connection (the ``shipkit_connection`` fixture).
        resume_from: a checkpoint the first attempt sees as ``job.resume_from``.
        max_attempts / backoff / timeout_s: the worker's policies (one attempt by default).
        wait_s: how long to wait for the job to end (then ``NatsTimeoutError``).
        extra: what a ``ctx`` parameter receives (a worker needing the service's ``Context``
            is better tested with ``run_service``).

    The queue is fresh (a random name) and closed afterwards; its streams stay on the test server.
    """
    queue: JobQueue[Any] = JobQueue(connection, name=f"test_{uuid.uuid4().hex[:10]}")
    await queue.connect()
    try:
        spec = JobWorkerSpec.from_function(
            func, "test", max_attempts=max_attempts, backoff=backoff or Backoff(initial_s=0.01), timeout_s=timeout_s
        )
        job_id = await queue.submit(payload, "test", "shipkit.testing")
        if resume_from is not None:
            value, ref = await queue.engine.results.store(job_id, resume_from, name=f"{job_id}.checkpoint")
            stamp = now_ms()
            await queue.engine.update(job_id, lambda j: step.checkpointed(j, state=value, state_ref=ref, now=stamp))
        async with JobWorker(queue, spec, extra=(lambda _: extra) if extra is not None else None):
            return await queue.wait(job_id, timeout_s=wait_s)
    finally:
        await queue.close()
