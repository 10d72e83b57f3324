"""Graceful shutdown by real signals: ``shipkit run`` subprocesses, and the in-process signal capture."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from apps.cli_process import ShipkitProcess, child_env
from nats.aio.msg import Msg

from shipkit import Client, ConnectionManager, Runtime, Service, ServiceError
from shipkit.jobs import JobQueue
from shipkit.service.runner import capture_signals

Spawn = Callable[..., Awaitable[ShipkitProcess]]
PROBE = "clitest.probe"


@pytest_asyncio.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``shipkit run`` subprocesses; any still running at the end of the test is killed."""
    started: list[ShipkitProcess] = []

    async def start(*args: str) -> ShipkitProcess:
        process = await ShipkitProcess.start(*args, cwd=tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.kill()


async def _hold_in_flight(connection: ConnectionManager, client: Client) -> asyncio.Task[Any]:
    """Send a ``clitest.hold`` request and return once the handler is running (it then waits for a release)."""
    started = asyncio.Event()

    async def on_started(msg: Msg) -> None:
        started.set()

    subscription = await connection.client.subscribe(f"{PROBE}.started", cb=on_started)
    await connection.client.flush()
    request = asyncio.create_task(client.request("clitest.hold", timeout_s=60))
    try:
        await asyncio.wait_for(started.wait(), 10)
    finally:
        await subscription.unsubscribe()
    return request


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_in_flight_request_gets_its_reply(
    spawn: Spawn,
    shipkit_nats_url: str,
    shipkit_connection: ConnectionManager,
    shipkit_client: Client,
    signum: signal.Signals,
) -> None:
    """A signal during a request: the request still gets its reply, then the process exits 0 with a summary."""
    process = await spawn("cli_echo", "--nats-url", shipkit_nats_url, "--graceful-timeout", "60")
    await process.wait_for_log("service.started")
    request = await _hold_in_flight(shipkit_connection, shipkit_client)

    process.send_signal(signum)
    stopping = await process.wait_for_log("shutdown.started")
    assert stopping["in_flight"] == 1
    assert not request.done()  # the grace period is running and the handler has not been released
    await shipkit_connection.client.publish(f"{PROBE}.release", b"")

    assert await asyncio.wait_for(request, 10) == {"status": "released"}
    assert await process.wait_exit() == 0
    summary = process.logged("shutdown.complete")
    assert len(summary) == 1
    assert summary[0]["handled"] == 1
    assert summary[0]["failed"] == 0
    assert summary[0]["cancelled"] == 0
    assert process.logged("signal.received")[0]["signal"] == signum.name


async def test_second_sigint_skips_the_grace_period(
    spawn: Spawn, shipkit_nats_url: str, shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """A second SIGINT cancels the in-flight handler at once (its caller gets a 503) and the process exits 0."""
    process = await spawn("cli_echo", "--nats-url", shipkit_nats_url, "--graceful-timeout", "600")
    await process.wait_for_log("service.started")
    request = await _hold_in_flight(shipkit_connection, shipkit_client)

    process.send_signal(signal.SIGINT)
    await process.wait_for_log("shutdown.started")
    process.send_signal(signal.SIGINT)

    # Never released: without the forced exit this would wait out the 600 s grace period.
    assert await process.wait_exit(timeout_s=30) == 0
    with pytest.raises(ServiceError) as caught:
        await asyncio.wait_for(request, 10)
    assert caught.value.code == 503
    assert [r["force"] for r in process.logged("signal.received")] == [False, True]
    summary = process.logged("shutdown.complete")
    assert len(summary) == 1
    assert summary[0]["cancelled"] == 1


async def test_capture_signals_routes_and_restores() -> None:
    """In process: SIGTERM asks the runtime to stop, a later SIGINT forces it, and the old handlers come back."""
    runtime = Runtime(Service("sigcapture"), "nats://127.0.0.1:1")  # never connected
    seen: list[int] = []

    def sentinel(signum: int, frame: object) -> None:
        seen.append(signum)

    saved = {s: signal.signal(s, sentinel) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with capture_signals(runtime):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(runtime.should_exit.wait(), 5)
            assert not runtime.force_exit.is_set()
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(runtime.force_exit.wait(), 5)
        assert signal.getsignal(signal.SIGINT) is sentinel
        assert signal.getsignal(signal.SIGTERM) is sentinel
        assert seen == []  # both signals went to the runtime, not to the previous handlers
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


async def test_second_sigint_gives_a_running_job_back_at_once(tmp_path: Path, shipkit_nats_url: str) -> None:
    """A job counts as in flight; a second SIGINT interrupts it and gives it back with its progress cleared."""
    env = child_env(SHIPKIT_NATS_URL=shipkit_nats_url)
    process = await ShipkitProcess.start("cli_long_job:service", "--graceful-timeout", "120", cwd=tmp_path, env=env)
    try:
        await process.wait_for_log("service.started")
        async with JobQueue(shipkit_nats_url) as queue:
            job_id = await queue.submit({"n": 1}, "slow", "test")
            started = await process.wait_for_log("slow.started")
            assert started["job_id"] == job_id
            process.send_signal(signal.SIGINT)
            assert (await process.wait_for_log("shutdown.started"))["in_flight"] >= 1
            process.send_signal(signal.SIGINT)
            # bounded well under the job's 60 s and the 120 s grace: the job was interrupted
            assert await process.wait_exit(timeout_s=20) == 0
            given_back = process.logged("job.given_back")
            assert [r["job_id"] for r in given_back] == [job_id]
            assert given_back[0]["worker"] == "slow" and given_back[0]["attempt"] == 1
            job = await queue.get(job_id)
        assert job is not None
        assert job.state.value == "queued" and job.attempt == 0
        assert job.progress is None and job.progress_message is None
    finally:
        await process.kill()
