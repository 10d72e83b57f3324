"""A service for the shutdown tests: a job worker whose job runs for a minute unless interrupted."""

from __future__ import annotations

import asyncio

from shipkit import Service
from shipkit.jobs import JobContext
from shipkit.logging import get_logger

service = Service("longjob", description="shipkit shutdown tests")
log = get_logger("tests.longjob")


@service.job_worker("slow", lease_s=30.0)
async def slow(payload: dict[str, int], job: JobContext) -> str:
    """Report progress, say so in the log, then run for a minute (longer than any test waits)."""
    await job.progress(0.5, "halfway")
    log.info("slow.started", job_id=job.id)
    await asyncio.sleep(60)
    return "done"
