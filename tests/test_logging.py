"""Tests for shipkit.logging: no secrets or locals in any format, a quiet unconfigured library, ANSI on a TTY only."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nats
import pytest
from apps.cli_process import ShipkitProcess, child_env
from apps.log_secrets import PASSWORD, SECRETS

from shipkit.jobs import JobQueue


async def _fail_a_request_and_a_job(url: str) -> str:
    """Send the failing login request and submit the failing job; return the job id."""
    nc = await nats.connect(url)
    try:
        reply = await nc.request("leaky.login", json.dumps({"user": "ada", "password": PASSWORD}).encode(), timeout=10)
        assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "500"
    finally:
        await nc.close()
    async with JobQueue(url) as queue:
        return await queue.submit({"password": PASSWORD}, "leak", "test")


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_secret_or_local_in_any_log_format(log_format: str, shipkit_nats_url: str, tmp_path: Path) -> None:
    """After a failing handler and a failing job, no password, token, nkey seed or local value is in the log."""
    url_with_password = shipkit_nats_url.replace("nats://", f"nats://ada:{PASSWORD}@")
    env = child_env(SHIPKIT_NATS_URL=url_with_password)
    process = await ShipkitProcess.start(
        "log_secrets:service", "--log-level", "debug", cwd=tmp_path, env=env, log_format=log_format
    )
    try:
        await process.wait_for_line("service.started")
        job_id = await _fail_a_request_and_a_job(shipkit_nats_url)
        await process.wait_for_line("message.failed")
        dead = await process.wait_for_line("job.dead")
        process.send_signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
    finally:
        await process.kill()
    log = "\n".join(process.lines)
    for secret in SECRETS:
        assert secret not in log, f"{secret!r} leaked into the {log_format} log"
    assert job_id in dead and "worker" in dead and "attempt" in dead
    assert log.count("Traceback") >= 2 if log_format == "console" else '"exc_type": "ValueError"' in log
    assert "\x1b[" not in log  # stderr is a pipe: no colours


def _python(code: str, arg: str, **streams: int) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``arg``; stdout/stderr captured unless given."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), arg],
        stdout=streams.get("stdout", subprocess.PIPE),
        stderr=streams.get("stderr", subprocess.PIPE),
        text=True,
        timeout=60,
        env=child_env(PYTHONPATH=os.pathsep.join(sys.path)),
        check=False,
    )


UNCONFIGURED_SCRIPT = """
    import asyncio, sys
    import nats
    from apps.log_secrets import service
    from shipkit.testing import run_service

    async def main():
        async with run_service(service, sys.argv[1]):
            nc = await nats.connect(sys.argv[1])
            await nc.request("leaky.login", b'{"user": "ada", "password": "x"}', timeout=10)
            await nc.close()

    asyncio.run(main())
"""


def test_unconfigured_library_writes_nothing_to_stdout(shipkit_nats_url: str) -> None:
    """A script that never configures logging gets an empty stdout, and only warnings and errors on stderr."""
    result = _python(UNCONFIGURED_SCRIPT, shipkit_nats_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "message.failed" in result.stderr and "error" in result.stderr
    assert "nats.connected" not in result.stderr and "service.started" not in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr


CONSOLE_SCRIPT = """
    import sys
    from shipkit.logging import configure_logging, get_logger
    configure_logging("info", "console")
    get_logger("t").info("hello.colours", where=sys.argv[1])
"""


def test_console_colours_only_on_a_terminal() -> None:
    """Console logs carry ANSI codes on a terminal and none when stderr is redirected."""
    piped = _python(CONSOLE_SCRIPT, "pipe")
    assert "hello.colours" in piped.stderr and "\x1b[" not in piped.stderr
    leader, follower = pty.openpty()
    try:
        on_tty = _python(CONSOLE_SCRIPT, "tty", stderr=follower)
        os.close(follower)
        follower = -1
        output = b""
        while chunk := _read(leader):
            output += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert on_tty.returncode == 0
    assert b"hello.colours" in output and b"\x1b[" in output


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other side is closed, all was read
        return b""


MANY_LINES_SCRIPT = """
    import sys
    from shipkit.logging import configure_logging, get_logger
    configure_logging("info", "json")
    log = get_logger("t")
    for n in range(int(sys.argv[1])):
        log.info("line.written", n=n, filler="x" * 200)
"""


def test_processes_sharing_stderr_never_split_a_json_line() -> None:
    """Each record is one write: workers under one supervisor share stderr and no line may interleave.

    (``print`` writes the record and its newline separately; on an unbuffered stderr two
    processes logging at once produced ``{...}{...}`` lines that no log collector can parse.)
    """
    read, write = os.pipe()
    env = child_env(PYTHONPATH=os.pathsep.join(sys.path))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(MANY_LINES_SCRIPT), "2000"], stderr=write, env=env, close_fds=True
        )
        for _ in range(4)
    ]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        lines = pipe.read().decode().splitlines()
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0, 0]
    records = [json.loads(line) for line in lines]  # a split or joined line raises here
    assert len(records) == 4 * 2000
    assert all(record["event"] == "line.written" for record in records)
