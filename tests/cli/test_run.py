"""``shipkit run``: a real subprocess against the test's server; startup failures exit 3 with one clear line."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from apps.cli_process import APPS_DIR, ShipkitProcess, child_env, run_cli
from apps.tls_certs import make_tls_files, server_args

from shipkit import Client, Service
from shipkit.server import NatsServer
from shipkit.testing import run_service

Spawn = Callable[..., Awaitable[ShipkitProcess]]


@pytest_asyncio.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``shipkit run`` subprocesses; any still running at the end of the test is killed."""
    started: list[ShipkitProcess] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> ShipkitProcess:
        process = await ShipkitProcess.start(*args, cwd=tmp_path, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.kill()


def _unused_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_run_answers_requests(spawn: Spawn, shipkit_nats_url: str, shipkit_client: Client) -> None:
    """A service started by `shipkit run --nats-url` answers a request, and SIGTERM stops it with exit 0."""
    process = await spawn("cli_echo:service", "--nats-url", shipkit_nats_url)
    started = await process.wait_for_log("service.started")
    assert started["service"] == "clitest"
    assert await shipkit_client.request("clitest.echo", {"hello": "world"}) == {"hello": "world"}
    process.send_signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


async def test_run_several_services_in_one_process(spawn: Spawn, shipkit_nats_url: str, shipkit_client: Client) -> None:
    """`shipkit run A B C` runs every service in one process on one connection; SIGTERM stops them all."""
    process = await spawn("cli_echo:service", "cli_two:first", "cli_two:second", "--nats-url", shipkit_nats_url)
    assert (await process.wait_for_log("fleet.started"))["services"] == ["clitest", "first", "second"]
    assert await shipkit_client.request("clitest.echo", {"fleet": True}) == {"fleet": True}
    process.send_signal(signal.SIGTERM)
    assert await process.wait_exit() == 0
    assert sorted(r["service"] for r in process.logged("shutdown.complete")) == ["clitest", "first", "second"]


async def test_run_module_alone_and_url_from_environment(
    spawn: Spawn, shipkit_nats_url: str, shipkit_client: Client
) -> None:
    """`shipkit run MODULE` finds the module's one service and connects to $SHIPKIT_NATS_URL."""
    process = await spawn("cli_echo", env=child_env(SHIPKIT_NATS_URL=shipkit_nats_url))
    await process.wait_for_log("service.started")
    assert await shipkit_client.request("clitest.echo", {"n": [1, 2]}) == {"n": [1, 2]}
    process.send_signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


async def test_run_calls_a_factory(spawn: Spawn, shipkit_nats_url: str, shipkit_client: Client) -> None:
    """`shipkit run module:function` runs the Service the function returns."""
    process = await spawn("cli_factory:create_service", "--nats-url", shipkit_nats_url)
    await process.wait_for_log("service.started")
    assert await shipkit_client.request("fromfactory.ping", response_type=str) == "pong"
    process.send_signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


def test_verify_refuses_a_missing_stream(tmp_path: Path, shipkit_nats_url: str) -> None:
    """`--verify` exits 3 naming the missing event stream instead of creating it."""
    result = run_cli(
        "run", "cli_verify", "--verify", "--nats-url", shipkit_nats_url, "--app-dir", str(APPS_DIR), cwd=tmp_path
    )
    assert result.returncode == 3, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.stderr
    assert "SHIP_EVENTS" in error_lines[0]
    assert "verify" in error_lines[0]
    assert "Traceback" not in result.stderr


async def test_verify_starts_once_everything_exists(spawn: Spawn, shipkit_nats_url: str) -> None:
    """After a normal run provisioned the stream and durable consumer, `--verify` starts and stops cleanly."""
    for extra in ([], ["--verify"]):
        process = await spawn("cli_verify", "--nats-url", shipkit_nats_url, *extra)
        await process.wait_for_log("service.started")
        process.send_signal(signal.SIGTERM)
        assert await process.wait_exit() == 0


def test_unreachable_server_is_a_startup_failure(tmp_path: Path) -> None:
    """Nothing listening at --nats-url: exit 3 with one line saying so, no traceback."""
    url = f"nats://127.0.0.1:{_unused_port()}"
    result = run_cli("run", "cli_echo", "--nats-url", url, "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "could not connect to NATS" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no_such_module_xyz", "could not import module 'no_such_module_xyz': no such module"),
        ("cli_echo:nope", "module 'cli_echo' has no attribute 'nope'"),
        ("cli_broken", "raised RuntimeError: cli_broken refuses to be imported"),
        ("cli_two", "holds several services (first, second)"),
        ("cli_factory:settings", "cli_factory:settings is a dict, not a shipkit.Service"),
        ("cli_factory:returns_dict", "factory cli_factory:returns_dict returned dict, not a shipkit.Service"),
        ("cli_factory:needs_arguments", "looks like a factory but calling it failed"),
        ("cli_factory:raises", "raised ValueError: the factory is broken"),
        ("cli_echo:", "must look like 'module:attribute' or 'module'"),
    ],
)
def test_import_errors_exit_3_with_one_line(tmp_path: Path, target: str, expected: str) -> None:
    """Each way of naming a service wrongly gives exit 3 and one `Error:` line saying what to fix."""
    result = run_cli("run", target, "--app-dir", str(APPS_DIR), "--no-embedded", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.stderr
    assert expected in error_lines[0]
    assert "Traceback" not in result.stderr


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    """With --log-level debug an import failure also prints the traceback, down to the module's own error."""
    result = run_cli("run", "cli_broken", "--app-dir", str(APPS_DIR), "--log-level", "debug", cwd=tmp_path)
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert 'raise RuntimeError("cli_broken refuses to be imported")' in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["run", "cli_echo", "--log-format", "xml"],
        ["run", "cli_echo", "--graceful-timeout", "-1"],
        ["run", "cli_echo", "--app-dir", "/nonexistent/shipkit/apps"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    """Missing arguments and invalid option values are usage errors (exit 2) and start nothing."""
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr


def test_failing_startup_hook_exits_3_with_its_traceback(tmp_path: Path, shipkit_nats_url: str) -> None:
    """A user startup hook raising is a startup failure: exit 3, the error line, and the hook's traceback."""
    result = run_cli("run", "cli_bad_startup", "--nats-url", shipkit_nats_url, "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Error: RuntimeError: database at db:5432 refused the connection" in result.stderr
    assert "in connect_to_the_database" in result.stderr


async def test_strict_name_refuses_a_different_namesake(tmp_path: Path, shipkit_nats_url: str) -> None:
    """`--strict-name` exits 3 naming both versions when another `clitest` already runs."""
    async with run_service(Service("clitest", version="0.0.9"), shipkit_nats_url):
        result = await asyncio.to_thread(
            run_cli,
            "run",
            "cli_echo:service",
            "--app-dir",
            str(APPS_DIR),
            "--strict-name",
            "--nats-url",
            shipkit_nats_url,
            cwd=tmp_path,
        )
    assert result.returncode == 3, result.stderr
    assert "another service runs under the name 'clitest'" in result.stderr
    assert "version 0.0.9" in result.stderr


def test_untrusted_tls_server_exits_3_within_the_deadline(tmp_path: Path) -> None:
    """shipkit run against a TLS server whose certificate it does not trust exits 3 naming --tls-ca."""
    files = make_tls_files(tmp_path)
    with NatsServer(store_dir=tmp_path / "store", extra_args=server_args(files)) as server:
        url = server.url.replace("nats://", "tls://")
        result = run_cli("run", "cli_echo", "--nats-url", url, "--app-dir", str(APPS_DIR), cwd=tmp_path, timeout_s=30)
    assert result.returncode == 3, result.stderr
    assert "not trusted" in result.stderr
    assert "--tls-ca" in result.stderr


async def test_signal_while_connecting_exits_3_at_once(spawn: Spawn) -> None:
    """SIGTERM while the first connection is still being made stops shipkit run with exit 3 right away."""
    accepted = asyncio.Event()

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()  # and never send INFO: the client waits for its connect deadline

    silent = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        url = f"nats://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
        process = await spawn("cli_echo", "--nats-url", url)
        await asyncio.wait_for(accepted.wait(), 15)
        process.send_signal(signal.SIGTERM)
        # Bounded loosely for a loaded machine; an ignored signal would end in "timed out" at the
        # 5 s connect deadline instead, which the message check below tells apart.
        code = await process.wait_exit(timeout_s=15)
    finally:
        silent.close()
    assert code == 3, "\n".join(process.lines)
    assert any("stopped by a signal while connecting" in line for line in process.lines), process.lines
    assert not any("timed out" in line for line in process.lines), process.lines
