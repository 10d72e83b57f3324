"""Tests for shipkit.service.description: the description matches what starting the service provisions."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from shipkit import Service
from shipkit.config import NatsConfig
from shipkit.jobs import JobContext
from shipkit.service.description import describe
from shipkit.testing import run_service


def _trainer() -> Service:
    service = Service("trainer", version="2.0.0")

    @service.job_worker("train", concurrency=3, max_attempts=5, timeout_s=60, lease_s=12)
    async def train(payload: dict[str, Any], job: JobContext) -> None:
        """Never run here: the test only starts and stops the service."""

    return service


async def test_streams_and_buckets_are_the_ones_start_provisions(
    shipkit_config: NatsConfig, raw_js: JetStreamContext
) -> None:
    """Every stream a job-worker service creates at start is described, and nothing else but its result store."""
    service = _trainer()
    described = describe(service)
    async with run_service(service, shipkit_config):
        created = {info.config.name for info in await raw_js.streams_info()}
        consumer = await raw_js.consumer_info("JOBS_jobs_DISPATCH", "train")
        (worker,) = described["job_worker_details"]
        for listed in worker["consumers"]:  # one durable per priority level served; each one exists
            await raw_js.consumer_info(listed["stream"], listed["durable"])
        assert len(worker["consumers"]) == worker["priority_levels"]
    assert consumer.config.ack_wait == 12
    assert created <= set(described["streams"]), created - set(described["streams"])
    assert set(described["streams"]) - created <= {"OBJ_JOBS_jobs_RESULTS"}  # made on the first large result
    assert described["buckets"] == ["JOBS_jobs", "JOBS_jobs_WORKERS"]
    assert [o["bucket"] for o in described["object_stores"]] == ["JOBS_jobs_RESULTS"]
    assert all(s["replicas"] == 1 and s["storage"] == "file" for s in described["stream_details"])


def test_job_worker_options_and_consumer_are_described() -> None:
    """Concurrency, attempts, timeout, lease and the durable consumer of each job worker are in the description."""
    (worker,) = describe(_trainer())["job_worker_details"]
    assert worker["concurrency"] == 3 and worker["max_attempts"] == 5
    assert worker["timeout_s"] == 60 and worker["lease_s"] == 12 and worker["queue"] == "jobs"
    assert worker["consumer"] == {
        "stream": "JOBS_jobs_DISPATCH",
        "durable": "train",
        "filter": "ship.jobs.jobs.dispatch.train",
        "ack_wait_s": 12,
    }


def test_a_service_without_handlers_answers_no_requests() -> None:
    """A service with only job workers is not described as answering requests."""
    assert describe(_trainer())["answers_requests"] is False
