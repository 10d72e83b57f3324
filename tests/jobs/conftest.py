"""Fixtures of the job tests: a queue connected to this test's server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from shipkit.config import NatsConfig
from shipkit.jobs import JobQueue


@pytest_asyncio.fixture
async def queue(shipkit_nats_url: str) -> AsyncIterator[JobQueue[Any]]:
    """A connected :class:`JobQueue` with its own connection (quick reconnects for restart tests)."""
    config = NatsConfig.from_url(shipkit_nats_url, name="jobs-test", request_timeout_s=5.0, reconnect_time_wait_s=0.1)
    job_queue: JobQueue[Any] = JobQueue(config, source="tests")
    await job_queue.connect()
    try:
        yield job_queue
    finally:
        await job_queue.close()
