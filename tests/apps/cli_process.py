"""Drive a real ``shipkit`` command in a subprocess and read its JSON log lines as they arrive.

Used by the ``shipkit run`` and signal tests; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

APPS_DIR = Path(__file__).resolve().parent
"""The directory holding the service modules the CLI tests run (passed as ``--app-dir``)."""

SHIPKIT_CLI = [sys.executable, "-m", "shipkit.cli"]
"""The real command line, from the environment the tests run in."""


def child_env(**overrides: str) -> dict[str, str]:
    """The test's environment without NATS URL variables (a test sets them explicitly when it wants them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SHIPKIT_NATS_URL", "NATS_URL")}
    env.update(overrides)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``shipkit ARGS`` to completion (bounded) and capture its output."""
    return subprocess.run(
        [*SHIPKIT_CLI, *args],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class ShipkitProcess:
    """A running ``shipkit run ... --log-format json``; stderr is parsed line by line in the background.

    Attributes:
        records: the JSON log records seen so far.
        lines: every stderr line (JSON or not), for failure messages.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        log_format: str = "json",
        app_dir: Path = APPS_DIR,
    ) -> ShipkitProcess:
        """Start ``shipkit run ARGS --app-dir APP_DIR --log-format LOG_FORMAT``."""
        process = await asyncio.create_subprocess_exec(
            *SHIPKIT_CLI,
            "run",
            *args,
            "--app-dir",
            str(app_dir),
            "--log-format",
            log_format,
            cwd=cwd,
            env=env or child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if isinstance(record, dict):
                self.records.append(record)
            self._changed.set()
        self._changed.set()

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The records with this event name so far."""
        return [r for r in self.records if r.get("event") == event]

    async def wait_for_line(self, text: str, timeout_s: float = 15) -> str:
        """The first stderr line containing ``text`` (any log format), waiting for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._changed.clear()
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            remaining = deadline - loop.time()
            if self._reader.done() or remaining <= 0:
                raise AssertionError(f"no line with {text!r}:\n" + "\n".join(self.lines))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_log_after(self, event: str, seen: int, timeout_s: float = 15) -> dict[str, Any]:
        """The record named ``event`` after the first ``seen`` of them, waiting for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._changed.clear()
            found = self.logged(event)
            if len(found) > seen:
                return found[seen]
            remaining = deadline - loop.time()
            if self._reader.done() or remaining <= 0:
                raise AssertionError(f"no {event!r} number {seen + 1}:\n" + "\n".join(self.lines))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_log(self, event: str, timeout_s: float = 15) -> dict[str, Any]:
        """The first record named ``event``, waiting for it (fails with the log so far)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._changed.clear()
            found = self.logged(event)
            if found:
                return found[0]
            if self._reader.done():
                raise AssertionError(f"process ended without logging {event!r}:\n" + "\n".join(self.lines))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout_s}s:\n" + "\n".join(self.lines))
            with contextlib.suppress(TimeoutError):  # the loop reports what was (not) logged
                await asyncio.wait_for(self._changed.wait(), remaining)

    def send_signal(self, signum: signal.Signals) -> None:
        """Deliver a real signal to the process."""
        self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float = 30) -> int:
        """The exit code, once the process and its log have ended."""
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await asyncio.wait_for(self._reader, timeout_s)
        return code

    async def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
