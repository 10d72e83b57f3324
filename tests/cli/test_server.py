"""Tests for the `shipkit` command group and `shipkit server`."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner

from shipkit.cli import EXIT_STARTUP_FAILURE, main
from shipkit.cli.server import _stop_on_signals

URL_RE = re.compile(rb"listening on (nats://127\.0\.0\.1:\d+)")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refuses_connections(port: int) -> bool:
    """True when nothing accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def shipkit_command() -> list[str]:
    """The installed `shipkit` console script next to this interpreter, else `python -m shipkit.cli`."""
    script = Path(sys.executable).with_name("shipkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "shipkit.cli"]


@asynccontextmanager
async def running_cli_server(store: Path, port: int) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`shipkit server --port <port>` as a subprocess, yielded with the URL it printed; killed if left running."""
    process = await asyncio.create_subprocess_exec(
        *shipkit_command(),
        "server",
        "--port",
        str(port),
        "--store-dir",
        str(store),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        match = URL_RE.search(line)
        assert match is not None, line
        yield process, match.group(1).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_version_option() -> None:
    """`shipkit --version` prints the installed package version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert version("shipkit") in result.output


def test_help_lists_server_command() -> None:
    """`shipkit --help` lists the server command, and `server --help` its options."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "server" in result.output
    result = CliRunner().invoke(main, ["server", "-h"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--store-dir", "--binary"):
        assert option in result.output


def test_bad_port_is_a_usage_error() -> None:
    """A port outside 0..65535 exits with click's usage code 2."""
    result = CliRunner().invoke(main, ["server", "--port", "70000"])
    assert result.exit_code == 2


def test_missing_binary_is_a_startup_failure(tmp_path: Path) -> None:
    """A --binary that does not exist exits with code 3 and names the path."""
    missing = tmp_path / "no-nats-server"
    result = CliRunner().invoke(main, ["server", "--binary", str(missing), "--store-dir", str(tmp_path)])
    assert result.exit_code == EXIT_STARTUP_FAILURE
    assert str(missing) in result.output


def test_port_in_use_is_a_startup_failure(tmp_path: Path) -> None:
    """A port another process holds exits with code 3 and the server's bind error; handlers are restored."""
    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(main, ["server", "--port", str(port), "--store-dir", str(tmp_path)])
    assert result.exit_code == EXIT_STARTUP_FAILURE
    assert "address already in use" in result.output
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_on_signals_sets_event_and_restores_handlers() -> None:
    """Inside the capture SIGINT and SIGTERM set the stop event; afterwards the previous handlers are back."""

    def sentinel(signum: int, frame: object) -> None:
        raise AssertionError("the previous handler must not run inside the capture")

    old_int = signal.signal(signal.SIGINT, sentinel)
    old_term = signal.signal(signal.SIGTERM, sentinel)
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            stop = threading.Event()
            with _stop_on_signals(stop):
                signal.raise_signal(signum)
                assert stop.is_set()
            assert signal.getsignal(signal.SIGINT) is sentinel
            assert signal.getsignal(signal.SIGTERM) is sentinel
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_server_runs_jetstream_and_stops_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    """`shipkit server` serves JetStream to a stock client and exits 0, with the server stopped, on SIGTERM/SIGINT."""
    port = free_port()
    async with running_cli_server(tmp_path / "store", port) as (process, url):
        assert url == f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        try:
            js = nc.jetstream()
            await js.add_stream(name="CLI", subjects=["cli.>"])
            ack = await js.publish("cli.hello", b"hi")
            assert (ack.stream, ack.seq) == ("CLI", 1)
        finally:
            await nc.close()
        os.kill(process.pid, signum)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        assert process.stdout is not None
        assert b"stopped" in await asyncio.wait_for(process.stdout.read(), timeout=5)
    assert refuses_connections(port)
    assert (tmp_path / "store" / "jetstream").is_dir()  # the store is kept between runs


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended while we looked
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
async def test_sigkilled_shipkit_server_takes_nats_server_with_it(tmp_path: Path) -> None:
    """SIGKILL on `shipkit server` leaves no orphaned nats-server behind."""
    async with running_cli_server(tmp_path / "store", free_port()) as (process, _url):
        (server_pid,) = _children(process.pid)
        pidfd = os.pidfd_open(server_pid)
        try:
            process.kill()
            await process.wait()
            readable, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], 10)
            assert readable, f"nats-server {server_pid} outlived its SIGKILLed `shipkit server`"
        finally:
            os.close(pidfd)


def test_server_auth_options_need_their_partner() -> None:
    """--user without --password, or --token with --user, is a usage error."""
    assert CliRunner().invoke(main, ["server", "--user", "ada"]).exit_code == 2
    assert CliRunner().invoke(main, ["server", "--token", "t", "--user", "ada", "--password", "p"]).exit_code == 2


async def test_server_with_token_requires_it(tmp_path: Path) -> None:
    """`shipkit server --token` starts a server that refuses clients without the token."""
    process = await asyncio.create_subprocess_exec(
        *shipkit_command(),
        "server",
        "--port",
        str(free_port()),
        "--store-dir",
        str(tmp_path),
        "--token",
        "tok-secret-77",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        match = URL_RE.search(line)
        assert match is not None, line
        url = match.group(1).decode()
        with pytest.raises(Exception, match=r"uthorization|no servers"):
            await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
        nc = await nats.connect(url, token="tok-secret-77", allow_reconnect=False, connect_timeout=2)
        await nc.close()
    finally:
        process.terminate()
        await process.wait()
    assert process.stdout is not None
    assert b"tok-secret-77" not in line + await process.stdout.read()
