"""The worker registry: workers advertise themselves; submit validates against their schema or warns."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from pydantic import BaseModel
from structlog.testing import capture_logs

from shipkit.errors import SerializationError
from shipkit.jobs import JobContext, JobQueue, JobWorker, JobWorkerSpec


class TrainingRun(BaseModel):
    """A typed payload."""

    epochs: int
    model: str = "base"


async def train(run: TrainingRun, job: JobContext) -> int:
    """Returns the epochs."""
    return run.epochs


async def test_running_workers_advertise_and_withdraw(queue: JobQueue[Any]) -> None:
    """Two running workers of one name are listed with concurrency and schema; a stopped one disappears."""
    spec = JobWorkerSpec.from_function(train, worker="trainer", concurrency=4)
    async with JobWorker(queue, spec):
        second = JobWorker(queue, JobWorkerSpec.from_function(train, worker="evaluator", priority_levels=1))
        await second.start()
        infos = await queue.workers()
        assert [(i.worker, i.concurrency, i.priority_levels) for i in infos] == [("evaluator", 1, 1), ("trainer", 4, 3)]
        assert infos[1].payload_schema["required"] == ["epochs"] and infos[1].queue == "jobs"
        await second.stop()
        assert [i.worker for i in await queue.workers()] == ["trainer"]
        assert [i.worker for i in await queue.workers("trainer")] == ["trainer"]
    assert await queue.workers() == []


async def test_submit_refuses_a_payload_the_workers_schema_rejects(queue: JobQueue[Any]) -> None:
    """With a worker advertising its schema, a bad payload is refused with the field named and nothing queued."""
    async with JobWorker(queue, JobWorkerSpec.from_function(train, worker="trainer")):
        with pytest.raises(SerializationError, match=r"worker 'trainer'.*epochs: expected integer, got string"):
            await queue.submit({"epochs": "many"}, "trainer")
        with pytest.raises(SerializationError, match="epochs: required"):
            await queue.submit_many([{"epochs": 1}, {"model": "x"}], "trainer")
        assert (await queue.counts()).total == 0
        assert await queue.submit({"epochs": 2}, "trainer") == "JOB-001"  # no id was used up by the refusals
        assert await (await queue.submit({"epochs": 3}, "trainer")).result(timeout_s=5) == 3


async def test_submit_to_a_name_no_worker_serves_warns_and_queues(queue: JobQueue[Any]) -> None:
    """A typo'd worker name is queued durably, with one warning naming it."""
    configured = structlog.is_configured()
    try:
        with capture_logs() as logs:
            await queue.submit({"epochs": 1}, "trainr")
            await queue.submit({"epochs": 1}, "trainr")
    finally:
        if not configured:  # capture_logs leaves structlog "configured": later tests check that
            structlog.reset_defaults()
    warnings = [entry for entry in logs if entry["event"] == "job.no_worker"]
    assert [w["worker"] for w in warnings] == ["trainr"]
    assert (await queue.counts()).queued == 2
