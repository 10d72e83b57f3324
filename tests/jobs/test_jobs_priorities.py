"""Priorities: with a backlog, every worker of a name takes high before normal before low."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipkit.errors import ConfigurationError
from shipkit.jobs import JobContext, JobQueue, JobWorker, JobWorkerSpec


async def _backlog(queue: JobQueue[Any], per_level: int) -> list[str]:
    ids: list[str] = []
    for priority in ("low", "normal", "high"):  # the lowest first, so submit order cannot explain the result
        ids += await queue.submit_many([{"p": priority}] * per_level, "w", priority=priority)
    return ids


async def test_one_worker_drains_a_backlog_highest_priority_first(queue: JobQueue[Any]) -> None:
    """A worker started on a mixed backlog runs every high job, then every normal one, then the low ones."""
    order: list[str] = []

    async def work(payload: dict[str, str], job: JobContext) -> None:
        order.append(job.priority)

    ids = await _backlog(queue, 6)
    async with JobWorker(queue, JobWorkerSpec.from_function(work, worker="w")):
        await asyncio.gather(*(queue.wait(job_id, timeout_s=10) for job_id in ids))
    assert order == ["high"] * 6 + ["normal"] * 6 + ["low"] * 6


async def test_two_workers_both_serve_high_before_low(queue: JobQueue[Any]) -> None:
    """Two workers of the same name sharing a backlog start no low job before every high job started."""
    order: list[str] = []

    async def work(payload: dict[str, str], job: JobContext) -> None:
        order.append(job.priority)
        await asyncio.sleep(0)  # yield, so the two workers interleave

    ids = await _backlog(queue, 8)
    spec = JobWorkerSpec.from_function(work, worker="w", concurrency=2)
    async with JobWorker(queue, spec), JobWorker(queue, spec):
        await asyncio.gather(*(queue.wait(job_id, timeout_s=10) for job_id in ids))
    assert len(order) == 24
    assert max(i for i, p in enumerate(order) if p == "high") < min(i for i, p in enumerate(order) if p == "low")


async def test_a_normal_only_worker_leaves_other_levels_alone(queue: JobQueue[Any]) -> None:
    """priority_levels=1 serves only normal jobs (one consumer); an unknown priority is refused at submit."""
    seen: list[str] = []

    async def work(payload: dict[str, str], job: JobContext) -> None:
        seen.append(job.priority)

    high = await queue.submit({}, "w", priority="high")
    normal = await queue.submit({}, "w")
    async with JobWorker(queue, JobWorkerSpec.from_function(work, worker="w", priority_levels=1)):
        await queue.wait(normal, timeout_s=5)
    assert seen == ["normal"]
    still = await queue.get(high)
    assert still is not None and still.state.value == "queued"
    with pytest.raises(ConfigurationError, match="priority must be one of"):
        await queue.submit({}, "w", priority="urgent")  # type: ignore[arg-type]
