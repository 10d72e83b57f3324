"""The runnable example in examples/jobs runs to completion against a real server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "training_queue.py"


async def test_training_queue_example_runs(shipkit_nats_url: str) -> None:
    """The example completes its four jobs (the flaky one resumed from its checkpoint) and stops cleanly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), shipkit_nats_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    output = stdout.decode()
    assert proc.returncode == 0, output
    assert "JOB-002 attempt 2 resumes from epoch 1" in output
    assert "JOB-002 complete after 2 attempt(s): {'loss': 0.333, 'attempts': 2, 'resumed_from': 1}" in output
    assert "'complete': 4" in output
    assert "handled=4" in output
