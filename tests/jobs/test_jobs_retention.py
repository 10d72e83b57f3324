"""Retention: finished jobs expire after ``retention_s``, ``purge`` deletes on demand, counts stay exact."""

from __future__ import annotations

from typing import Any

import pytest
from jobs_helpers import wait_until

from shipkit.config import NatsConfig
from shipkit.errors import ConfigurationError, ShipkitError
from shipkit.jobs import JobQueue, JobState, JobWorker, JobWorkerSpec


async def echo(payload: Any) -> Any:
    """Returns its payload."""
    return payload


async def test_finished_jobs_expire_after_the_worker_s_retention(shipkit_nats_url: str) -> None:
    """A 1 s retention deletes the record and its large result; counts() no longer counts it; others stay."""
    config = NatsConfig.from_url(shipkit_nats_url, request_timeout_s=5.0)
    async with JobQueue(config, result_inline_max_bytes=64) as queue:
        short = JobWorkerSpec.from_function(echo, worker="short", retention_s=1)
        keep = JobWorkerSpec.from_function(echo, worker="keep")
        async with JobWorker(queue, short), JobWorker(queue, keep):
            big = await queue.submit({"blob": "x" * 500}, "short")
            kept = await queue.submit(1, "keep")
            finished = await queue.wait(big, timeout_s=5)
            await queue.wait(kept, timeout_s=5)
            assert finished.result_ref is not None
            assert (await queue.counts()).complete == 2
            await wait_until(lambda: _gone(queue, big), timeout=10, interval=0.1)
        counts = await queue.counts()
        assert (counts.complete, counts.total) == (1, 1)
        assert await queue.get(kept) is not None
        with pytest.raises(ShipkitError, match="JOB-001"):
            await queue.engine.results.fetch(big, finished.result_ref)


async def _gone(queue: JobQueue[Any], job_id: str) -> bool:
    return await queue.get(job_id) is None


async def test_purge_deletes_finished_jobs_by_state_age_and_worker(queue: JobQueue[Any]) -> None:
    """purge filters by state, age and worker, never touches waiting jobs, and keeps counts() exact."""
    cancelled = [await queue.submit(i, "a") for i in range(3)]
    for job_id in cancelled:
        await queue.cancel(job_id)
    other = await queue.submit(9, "b")
    await queue.cancel(other)
    waiting = await queue.submit(0, "a")
    assert await queue.purge(state="cancelled", older_than_s=3600) == 0  # all too recent
    assert await queue.purge(state="cancelled", worker="a") == 3
    counts = await queue.counts()
    assert (counts.cancelled, counts.queued, counts.total) == (1, 1, 2)
    assert await queue.purge() == 1
    assert [job.id for job in await queue.list()] == [waiting]
    assert (await queue.counts()).total == 1 == (await queue.engine.recount(await queue.counts())).total
    with pytest.raises(ConfigurationError, match="only finished jobs"):
        await queue.purge(state=JobState.QUEUED)
