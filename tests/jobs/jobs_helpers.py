"""Helpers for the job tests: bounded waits, an event recorder and worker subprocesses.

Nothing here sleeps to synchronise: waits poll a condition under ``asyncio.wait_for`` and fail
with the last observed value when the bound passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.msg import Msg

from shipkit.jobs import Job, JobQueue, JobState

T = TypeVar("T")

WORKER_SCRIPT = Path(__file__).with_name("worker_proc.py")


async def wait_until(check: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; return it (TimeoutError after ``timeout``)."""

    async def poll() -> T:
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(interval)

    return await asyncio.wait_for(poll(), timeout)


async def wait_state(queue: JobQueue[Any], job_id: str, *states: JobState, timeout: float = 5.0) -> Job:
    """Wait until the job is in one of ``states``; return the record."""

    async def check() -> Job | None:
        job = await queue.get(job_id)
        return job if job is not None and job.state in states else None

    try:
        return await wait_until(check, timeout)
    except TimeoutError:
        raise AssertionError(f"{job_id} never reached {states}: {await queue.get(job_id)}") from None


class EventRecorder:
    """Collects ``ship.events.job.>`` ShipEvents with a raw client (as a peer agent would)."""

    def __init__(self, url: str, pattern: str = "ship.events.job.>") -> None:
        self.url = url
        self.pattern = pattern
        self.events: list[dict[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self._nc: Any = None

    async def __aenter__(self) -> EventRecorder:
        self._nc = await nats.connect(self.url)
        await self._nc.subscribe(self.pattern, cb=self._on)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def _on(self, msg: Msg) -> None:
        self.raw.append((msg.subject, msg.data))
        self.events.append(json.loads(msg.data))
        self._changed.set()

    def of(self, event_type: str, job_id: str | None = None) -> list[dict[str, Any]]:
        """Events of ``event_type`` (for ``job_id``)."""
        return [
            e for e in self.events if e["event_type"] == event_type and (job_id is None or e["payload"]["id"] == job_id)
        ]

    async def wait(self, event_type: str, job_id: str | None = None, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` such events arrived."""

        async def enough() -> None:
            while len(self.of(event_type, job_id)) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            seen = [(e["event_type"], e["payload"]["id"]) for e in self.events]
            raise AssertionError(f"expected {count} {event_type} for {job_id}; saw {seen}") from None


class WorkerProcess:
    """``worker_proc.py`` in a child process; its stdout lines are collected as they come."""

    def __init__(self, url: str, worker: str, mode: str = "echo", **options: Any) -> None:
        self.args = [sys.executable, str(WORKER_SCRIPT), "--url", url, "--worker", worker, "--mode", mode]
        for key, value in options.items():
            self.args += [f"--{key.replace('_', '-')}", str(value)]
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # The children's logs go to a temporary file (tail shown by stderr_tail() when a test fails);
        # set JOBS_WORKER_STDERR=/path to keep them when debugging a test.
        debug_log = os.environ.get("JOBS_WORKER_STDERR")
        self._stderr = (
            open(debug_log, "a+b")  # noqa: SIM115 - outlives this call
            if debug_log
            else tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call
        )

    async def start(self) -> WorkerProcess:
        """Start the child and wait until it says READY."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_line("READY", timeout=15)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())
            self._changed.set()
        self._changed.set()

    def stderr_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the child wrote to stderr."""
        self._stderr.flush()
        self._stderr.seek(0)
        return "\n".join(self._stderr.read().decode(errors="replace").splitlines()[-lines:])

    def words(self, tag: str) -> list[str]:
        """The arguments of every line starting with ``tag``."""
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith(tag + " ")]

    async def wait_line(self, tag: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` lines start with ``tag``."""

        async def enough() -> None:
            while sum(1 for line in self.lines if line.split(" ", 1)[0] == tag) < count:
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"worker exited ({self.proc.returncode}); output: {self.lines[-5:]}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            raise AssertionError(f"worker printed {tag} fewer than {count} times; tail: {self.lines[-5:]}") from None

    async def kill(self) -> None:
        """SIGKILL the child."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the child (graceful stop) and wait for it to exit."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code
