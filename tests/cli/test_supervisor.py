"""Tests for shipkit.cli._supervisor: `shipkit run --workers N` and `--reload` in real subprocesses."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio
from apps.cli_process import ShipkitProcess, child_env, run_cli

from shipkit import Client
from shipkit.cli._supervisor import child_argv

Spawn = Callable[..., Awaitable[ShipkitProcess]]

APP = """
from shipkit import Service
service = Service("reloaded", version="{version}")

@service.handler("version")
async def version() -> dict[str, str]:
    return {{"version": "{version}"}}
"""


@pytest_asyncio.fixture
async def spawn(tmp_path: Path, shipkit_nats_url: str) -> AsyncIterator[Spawn]:
    """Start `shipkit run` supervisors on the test's server; any left running is killed."""
    started: list[ShipkitProcess] = []

    async def start(*args: str) -> ShipkitProcess:
        process = await ShipkitProcess.start(*args, cwd=tmp_path, env=child_env(SHIPKIT_NATS_URL=shipkit_nats_url))
        started.append(process)
        return process

    yield start
    for process in started:
        await process.kill()


async def _wait_count(process: ShipkitProcess, event: str, count: int) -> list[dict[str, object]]:
    """Wait until ``count`` records named ``event`` were logged (every wait bounded)."""
    while len(process.logged(event)) < count:
        await process.wait_for_log_after(event, len(process.logged(event)))
    return process.logged(event)


def test_child_argv_drops_the_supervisor_flags() -> None:
    """The children run the same command without --workers and --reload."""
    argv = child_argv(["run", "app:svc", "--workers", "3", "--reload", "--workers=2", "--log-level", "debug"])
    assert argv[1:] == ["-m", "shipkit.cli", "run", "app:svc", "--log-level", "debug"]


def test_workers_and_reload_are_mutually_exclusive(tmp_path: Path) -> None:
    """--workers 2 --reload is a usage error."""
    result = run_cli("run", "cli_echo:service", "--workers", "2", "--reload", cwd=tmp_path)
    assert result.returncode == 2
    assert "mutually exclusive" in result.stderr


async def test_workers_run_restart_a_crashed_one_and_report_it(spawn: Spawn, shipkit_client: Client) -> None:
    """Two children serve; a SIGKILLed one is restarted; SIGTERM stops all; the exit code reports the crash."""
    process = await spawn("cli_echo:service", "--workers", "2")
    await _wait_count(process, "service.started", 2)
    assert await shipkit_client.request("clitest.echo", {"w": 2}) == {"w": 2}
    victim = int(str(process.logged("worker.started")[0]["pid"]))
    os.kill(victim, signal.SIGKILL)
    crashed = await process.wait_for_log("worker.crashed")
    assert crashed["pid"] == victim and crashed["exit_code"] == -signal.SIGKILL
    await _wait_count(process, "service.started", 3)
    process.send_signal(signal.SIGTERM)
    assert await process.wait_exit() == 1
    assert len(process.logged("shutdown.complete")) == 2


async def test_workers_clean_stop_exits_0(spawn: Spawn) -> None:
    """SIGINT fans out to every child; all stop gracefully and the supervisor exits 0."""
    process = await spawn("cli_echo:service", "--workers", "2")
    await _wait_count(process, "service.started", 2)
    process.send_signal(signal.SIGINT)
    assert await process.wait_exit() == 0
    assert len(process.logged("shutdown.complete")) == 2, "\n".join(process.lines)


async def test_reload_restarts_on_a_source_change(
    tmp_path: Path, shipkit_nats_url: str, shipkit_client: Client
) -> None:
    """Editing the service module restarts the child with the new code."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "reloaded_app.py"
    module.write_text(APP.format(version="1.0.0"))
    process = await ShipkitProcess.start(
        "reloaded_app:service",
        "--reload",
        app_dir=app_dir,
        cwd=tmp_path,
        env=child_env(SHIPKIT_NATS_URL=shipkit_nats_url),
    )
    try:
        await process.wait_for_log("reload.watching")
        await process.wait_for_log("service.started")
        assert await shipkit_client.request("reloaded.version") == {"version": "1.0.0"}
        module.write_text(APP.format(version="2.0.0"))
        await process.wait_for_log("reload.restarting")
        started = await _wait_count(process, "service.started", 2)
        assert started[-1]["version"] == "2.0.0"
        assert await shipkit_client.request("reloaded.version") == {"version": "2.0.0"}
        process.send_signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
    finally:
        await process.kill()
