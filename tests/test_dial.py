"""shipkit._dial: the first connection under one deadline (TLS included) and errors that say what failed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from apps.tls_certs import TlsFiles, make_tls_files, server_args

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import NatsConnectionError
from shipkit.server import NatsServer


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, server and client certificate generated for this module."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server that serves TLS with a certificate from the test CA."""
    with NatsServer(store_dir=tmp_path_factory.mktemp("tls-store"), extra_args=server_args(tls_files)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server that requires a client certificate signed by the test CA."""
    args = server_args(tls_files, verify_clients=True)
    with NatsServer(store_dir=tmp_path_factory.mktemp("mtls-store"), extra_args=args) as server:
        yield server


def tls_url(server: NatsServer) -> str:
    """The server's URL with the tls:// scheme."""
    return server.url.replace("nats://", "tls://")


@pytest_asyncio.fixture
async def silent_listener() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A TCP port that accepts connections and never says a word, and an event set on the first accept."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}", accepted
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_untrusted_certificate_fails_within_the_deadline_naming_tls_ca(tls_server: NatsServer) -> None:
    """A server certificate the client does not trust gives one error naming --tls-ca, not a hang."""
    manager = ConnectionManager(NatsConfig(url=tls_url(tls_server), connect_timeout_s=3))
    with pytest.raises(NatsConnectionError, match="not trusted") as info:
        await asyncio.wait_for(manager.connect(), timeout=6)
    message = str(info.value)
    assert "--tls-ca" in message
    assert tls_url(tls_server) in message
    assert "is a server running" not in message
    assert not manager.is_connected


async def test_trusted_ca_connects(tls_server: NatsServer, tls_files: TlsFiles) -> None:
    """With the CA that signed the server certificate, the TLS connection works."""
    config = NatsConfig(url=tls_url(tls_server), tls_ca_file=tls_files.ca)
    async with ConnectionManager(config) as manager:
        assert (await manager.request("$JS.API.INFO", b"")).data


async def test_mutual_tls_needs_the_client_certificate(mtls_server: NatsServer, tls_files: TlsFiles) -> None:
    """A server requiring client certificates accepts ours and refuses a client without one, clearly."""
    config = NatsConfig(
        url=tls_url(mtls_server),
        tls_ca_file=tls_files.ca,
        tls_cert_file=tls_files.client_cert,
        tls_key_file=tls_files.client_key,
    )
    async with ConnectionManager(config) as manager:
        assert manager.is_connected
    bare = ConnectionManager(NatsConfig(url=tls_url(mtls_server), tls_ca_file=tls_files.ca, connect_timeout_s=3))
    with pytest.raises(NatsConnectionError, match="TLS handshake failed") as info:
        await asyncio.wait_for(bare.connect(), timeout=6)
    assert "--tls-cert" in str(info.value)


async def test_silent_server_times_out_at_the_overall_deadline(silent_listener: tuple[str, asyncio.Event]) -> None:
    """A server that accepts and never answers ends in 'timed out' at connect_timeout_s, every attempt included."""
    url, accepted = silent_listener
    manager = ConnectionManager(NatsConfig(url=url, connect_timeout_s=1.0))
    with pytest.raises(NatsConnectionError, match=r"timed out after 1\.0s"):
        await asyncio.wait_for(manager.connect(), timeout=4)
    assert accepted.is_set()


async def test_refused_keeps_the_server_hint() -> None:
    """Nothing listening says 'connection refused' and suggests starting a server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = ConnectionManager(NatsConfig(url=f"nats://u:hunter2@127.0.0.1:{port}"))
    with pytest.raises(NatsConnectionError, match="connection refused") as info:
        await asyncio.wait_for(manager.connect(), timeout=6)
    assert "shipkit server" in str(info.value)
    assert "hunter2" not in str(info.value)


async def test_cancelling_connect_leaves_nothing_running(silent_listener: tuple[str, asyncio.Event]) -> None:
    """Cancelling a connect in progress (a signal) returns promptly and leaves no client behind."""
    url, accepted = silent_listener
    manager = ConnectionManager(NatsConfig(url=url, connect_timeout_s=30))
    task = asyncio.create_task(manager.connect())
    await asyncio.wait_for(accepted.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 3)
    assert not manager.is_connected
