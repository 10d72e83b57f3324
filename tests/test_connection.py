"""Tests for shipkit.connection.ConnectionManager against a real nats-server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import BucketNotFoundError as NatsBucketNotFoundError
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs

from shipkit.config import KvBucketConfig, NatsConfig, ObjectStoreConfig, StreamConfig
from shipkit.connection import ConnectionManager, resolve_connection
from shipkit.errors import (
    ConfigurationError,
    NatsConnectionError,
    NatsTimeoutError,
    NotConnectedError,
    ProvisioningError,
    ShipkitError,
)
from shipkit.server import NatsServer

SECRET = "s3cr3t-Pa55word"
DAY_S = 24 * 3600.0


@asynccontextmanager
async def stock_client(url: str, **options: Any) -> AsyncIterator[Client]:
    """A plain nats-py client playing another process (or the infrastructure tooling)."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, **options)
    try:
        yield nc
    finally:
        await nc.close()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log entries with event ``name``."""
    return [entry for entry in logs if entry["event"] == name]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server requiring user `u` with the password SECRET."""
    with NatsServer(store_dir=tmp_path, extra_args=["--user", "u", "--pass", SECRET]) as server:
        yield server


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server requiring the token SECRET."""
    with NatsServer(store_dir=tmp_path, extra_args=["--auth", SECRET]) as server:
        yield server


# -- lifecycle ------------------------------------------------------------------------------------------


async def test_connect_and_disconnect_are_idempotent(shipkit_config: NatsConfig) -> None:
    """A second connect keeps the same client; a second disconnect is a no-op; connect works again after."""
    manager = ConnectionManager(shipkit_config)
    assert await manager.connect() is manager
    client = manager.client
    await manager.connect()
    assert manager.client is client
    assert manager.is_connected
    await manager.close()
    await manager.close()
    assert not manager.is_connected
    assert client.is_closed
    await manager.connect()
    assert manager.client is not client
    assert manager.client.is_connected
    await manager.close()


async def test_async_context_manager(shipkit_config: NatsConfig) -> None:
    """`async with ConnectionManager(...)` connects inside the block and disconnects after."""
    async with ConnectionManager(shipkit_config) as manager:
        assert manager.client.is_connected
        assert manager.max_payload > 0
    assert not manager.is_connected


@pytest.mark.parametrize("attribute", ["client", "jetstream", "max_payload"])
async def test_accessors_before_connect_raise(attribute: str) -> None:
    """client, jetstream and max_payload raise NotConnectedError before connect()."""
    manager = ConnectionManager(NatsConfig(url="nats://127.0.0.1:1"))
    with pytest.raises(NotConnectedError, match="connect"):
        getattr(manager, attribute)


async def test_accessors_after_disconnect_raise(shipkit_connection: ConnectionManager) -> None:
    """After disconnect() the accessors raise NotConnectedError again, and so does request()."""
    await shipkit_connection.close()
    with pytest.raises(NotConnectedError):
        _ = shipkit_connection.jetstream
    with pytest.raises(NotConnectedError):
        await shipkit_connection.request("anything", b"")


async def test_nothing_listening_fails_fast_naming_the_url() -> None:
    """Connecting where no server listens raises NatsConnectionError naming the URL, well within 5 s."""
    url = f"nats://127.0.0.1:{free_port()}"
    manager = ConnectionManager(NatsConfig(url=url))
    with pytest.raises(NatsConnectionError, match=url) as info:
        await asyncio.wait_for(manager.connect(), timeout=5)
    assert "shipkit server" in str(info.value)
    assert info.value.__cause__ is not None
    assert not manager.is_connected


async def test_connects_to_the_first_live_server_of_a_list(shipkit_nats_url: str) -> None:
    """With a dead seed first in the list, the manager connects to the live one."""
    config = NatsConfig(servers=[f"nats://127.0.0.1:{free_port()}", shipkit_nats_url])
    async with ConnectionManager(config) as manager:
        assert manager.client.is_connected


# -- provisioning: streams ----------------------------------------------------------------------------


async def test_ensure_stream_creates_a_missing_stream(shipkit_connection: ConnectionManager) -> None:
    """A missing stream is created with the declared limits and logged as stream.provisioned."""
    with capture_logs() as logs:
        info = await shipkit_connection.ensure_stream(StreamConfig.event_bus())
    assert info.config.name == "SHIP_EVENTS"
    assert info.config.max_msgs == 100_000
    assert info.config.max_age == DAY_S
    assert info.config.storage == api.StorageType.FILE
    assert events(logs, "stream.provisioned")[0]["stream"] == "SHIP_EVENTS"
    assert events(logs, "stream.drift") == []


async def test_ensure_stream_twice_no_false_drift(shipkit_config: NatsConfig) -> None:
    """A stream shipkit created is reused by another manager without a drift warning."""
    declared = StreamConfig.channels()
    async with ConnectionManager(shipkit_config) as first:
        await first.ensure_stream(declared)
    with capture_logs() as logs:
        async with ConnectionManager(shipkit_config) as second:
            info = await second.ensure_stream(declared)
            assert await second.ensure_stream(declared) is info  # cached
    assert events(logs, "stream.provisioned") == []
    assert events(logs, "stream.drift") == []


async def test_ensure_stream_reuses_existing_and_reports_drift(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """An existing stream with other limits is used as it is (not rewritten) and a drift warning lists the fields."""
    async with stock_client(shipkit_nats_url) as nc:
        await nc.jetstream().add_stream(name="SHIP_EVENTS", subjects=["ship.events.>"], max_msgs=5)
    with capture_logs() as logs:
        info = await shipkit_connection.ensure_stream(StreamConfig.event_bus())
    assert info.config.max_msgs == 5
    async with stock_client(shipkit_nats_url) as nc:
        assert (await nc.jetstream().stream_info("SHIP_EVENTS")).config.max_msgs == 5
    [drift] = events(logs, "stream.drift")
    assert drift["log_level"] == "warning"
    assert drift["name"] == "SHIP_EVENTS"
    assert drift["fields"] == ["max_age", "max_msgs"]
    assert drift["declared"]["max_msgs"] == 100_000
    assert drift["actual"]["max_msgs"] == 5
    assert events(logs, "stream.provisioned") == []


async def test_verify_mode_missing_stream_raises_and_creates_nothing(
    shipkit_config: NatsConfig, shipkit_nats_url: str
) -> None:
    """In verify mode a missing stream raises ProvisioningError naming it, and the stream is not created."""
    async with ConnectionManager(shipkit_config, provision="verify") as manager:
        with pytest.raises(ProvisioningError, match="SHIP_EVENTS"):
            await manager.ensure_stream(StreamConfig.event_bus())
    async with stock_client(shipkit_nats_url) as nc:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info("SHIP_EVENTS")


async def test_verify_mode_accepts_existing_stream(shipkit_config: NatsConfig, shipkit_nats_url: str) -> None:
    """In verify mode an existing stream is returned as it is."""
    async with stock_client(shipkit_nats_url) as nc:
        await nc.jetstream().add_stream(name="CHANNELS", subjects=["ship.channel.>"])
    async with ConnectionManager(shipkit_config, provision="verify") as manager:
        info = await manager.ensure_stream(StreamConfig.channels())
        assert info.config.name == "CHANNELS"


# -- provisioning: KV and object buckets --------------------------------------------------------------


async def test_ensure_kv_bucket_creates_and_reuses(shipkit_config: NatsConfig) -> None:
    """A missing KV bucket is created with the declared history and TTL; a second manager reuses it silently."""
    declared = KvBucketConfig.new("beings_status").with_ttl_secs(300)
    with capture_logs() as logs:
        async with ConnectionManager(shipkit_config) as first:
            kv = await first.ensure_kv_bucket(declared)
            assert await first.ensure_kv_bucket(declared) is kv
            status = await kv.status()
            assert (status.history, status.ttl) == (5, 300.0)
        async with ConnectionManager(shipkit_config) as second:
            await second.ensure_kv_bucket(declared)
    assert len(events(logs, "kv.provisioned")) == 1
    assert events(logs, "kv.drift") == []


async def test_ensure_kv_bucket_existing_is_kept_with_drift(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """An existing KV bucket with history 1 stays at 1 and the difference is reported as kv.drift."""
    async with stock_client(shipkit_nats_url) as nc:
        await nc.jetstream().create_key_value(bucket="ship_config", history=1)
    with capture_logs() as logs:
        kv = await shipkit_connection.ensure_kv_bucket(KvBucketConfig.new("ship_config"))
    assert (await kv.status()).history == 1
    [drift] = events(logs, "kv.drift")
    assert drift["fields"] == ["history"]
    assert (drift["declared"]["history"], drift["actual"]["history"]) == (5, 1)


async def test_verify_mode_missing_kv_bucket(shipkit_config: NatsConfig, shipkit_nats_url: str) -> None:
    """In verify mode a missing KV bucket raises ProvisioningError and is not created."""
    async with ConnectionManager(shipkit_config, provision="verify") as manager:
        with pytest.raises(ProvisioningError, match="ship_health"):
            await manager.ensure_kv_bucket(KvBucketConfig.new("ship_health"))
    async with stock_client(shipkit_nats_url) as nc:
        with pytest.raises(NatsBucketNotFoundError):
            await nc.jetstream().key_value("ship_health")


async def test_ensure_object_store_creates_and_reuses(shipkit_config: NatsConfig) -> None:
    """A missing object bucket is created; a second manager reuses it without drift."""
    declared = ObjectStoreConfig(bucket="snapshots")
    with capture_logs() as logs:
        async with ConnectionManager(shipkit_config) as first:
            store = await first.ensure_object_store(declared)
            assert await first.ensure_object_store(declared) is store
            await store.put("x", b"data")
        async with ConnectionManager(shipkit_config) as second:
            again = await second.ensure_object_store(declared)
            assert (await again.get("x")).data == b"data"
    assert len(events(logs, "objects.provisioned")) == 1
    assert events(logs, "objects.drift") == []


async def test_ensure_object_store_existing_is_kept_with_drift(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """An existing memory-backed object bucket is used as it is and reported as objects.drift."""
    async with stock_client(shipkit_nats_url) as nc:
        await nc.jetstream().create_object_store(
            "artifacts", config=api.ObjectStoreConfig(storage=api.StorageType.MEMORY)
        )
    with capture_logs() as logs:
        await shipkit_connection.ensure_object_store(ObjectStoreConfig(bucket="artifacts"))
    [drift] = events(logs, "objects.drift")
    assert drift["fields"] == ["storage"]
    async with stock_client(shipkit_nats_url) as nc:
        info = await nc.jetstream().stream_info("OBJ_artifacts")
        assert info.config.storage == api.StorageType.MEMORY


async def test_verify_mode_missing_object_store(shipkit_config: NatsConfig, shipkit_nats_url: str) -> None:
    """In verify mode a missing object bucket raises ProvisioningError and is not created."""
    async with ConnectionManager(shipkit_config, provision="verify") as manager:
        with pytest.raises(ProvisioningError, match="snapshots"):
            await manager.ensure_object_store(ObjectStoreConfig(bucket="snapshots"))
    async with stock_client(shipkit_nats_url) as nc:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info("OBJ_snapshots")


# -- request ------------------------------------------------------------------------------------------


async def test_request_round_trip(shipkit_connection: ConnectionManager) -> None:
    """request() sends the payload and headers and returns the responder's reply."""

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data.upper() + (msg.headers or {}).get("X-Tag", "").encode())

    await shipkit_connection.client.subscribe("svc.echo", cb=echo)
    reply = await asyncio.wait_for(shipkit_connection.request("svc.echo", b"hi", headers={"X-Tag": "!"}), timeout=5)
    assert reply.data == b"HI!"


async def test_request_to_silent_responder_times_out(shipkit_nats_url: str) -> None:
    """A request nobody answers fails with NatsTimeoutError after the configured request_timeout_s."""
    received = asyncio.Event()

    async def swallow(msg: Msg) -> None:
        received.set()  # received, never answered

    config = NatsConfig(url=shipkit_nats_url, request_timeout_s=0.2)
    async with ConnectionManager(config) as manager:
        await manager.client.subscribe("svc.silent", cb=swallow)
        with pytest.raises(NatsTimeoutError, match=r"svc\.silent"):
            await asyncio.wait_for(manager.request("svc.silent", b"?"), timeout=5)
        assert received.is_set()
        with pytest.raises(TimeoutError):  # also catchable as the builtin
            await asyncio.wait_for(manager.request("svc.silent", b"?", timeout_s=0.1), timeout=5)


async def test_request_without_responders_fails_quickly(shipkit_nats_url: str) -> None:
    """A request to a subject nobody subscribes to fails with a shipkit error, long before the timeout."""
    config = NatsConfig(url=shipkit_nats_url, request_timeout_s=30)
    async with ConnectionManager(config) as manager:
        with pytest.raises(NatsTimeoutError, match="no responders"):
            await asyncio.wait_for(manager.request("svc.nobody", b"?"), timeout=5)


# -- reconnect ----------------------------------------------------------------------------------------


async def wait_reconnected(client: Client, reconnects: int) -> None:
    """Poll until ``client`` has reconnected ``reconnects`` times and is connected (bounded by 5 s)."""
    deadline = time.monotonic() + 5
    while not (client.stats["reconnects"] >= reconnects and client.is_connected):
        assert time.monotonic() < deadline, "client did not reconnect within 5 s"
        await asyncio.sleep(0.05)


async def test_reconnects_after_server_restart(shipkit_server: NatsServer) -> None:
    """After the server restarts, the manager reconnects and JetStream publish and requests work again."""
    config = NatsConfig(url=shipkit_server.url, reconnect_time_wait_s=0.05, request_timeout_s=2)

    async def pong(msg: Msg) -> None:
        await msg.respond(b"pong")

    async with ConnectionManager(config) as manager:
        await manager.ensure_stream(StreamConfig.new("RECONNECT", "reconnect.>"))
        await manager.client.subscribe("svc.ping", cb=pong)
        with capture_logs() as logs:
            await asyncio.to_thread(shipkit_server.restart)
            await wait_reconnected(manager.client, 1)
        assert events(logs, "nats.reconnected")
        ack = await asyncio.wait_for(manager.jetstream.publish("reconnect.after", b"x"), timeout=5)
        assert ack.stream == "RECONNECT"
        reply = await asyncio.wait_for(manager.request("svc.ping", b""), timeout=5)
        assert reply.data == b"pong"


# -- credentials --------------------------------------------------------------------------------------


async def test_user_password_connects_and_is_never_logged(auth_server: NatsServer) -> None:
    """NatsConfig(user=, password=) authenticates; the password is in neither the logs nor repr(config)."""
    config = NatsConfig(url=auth_server.url, user="u", password=SECRET)
    with capture_logs() as logs:
        async with ConnectionManager(config) as manager:
            await manager.ensure_stream(StreamConfig.event_bus())
    assert SECRET not in repr(config)
    assert SECRET not in str(logs)
    assert events(logs, "stream.provisioned")


async def test_wrong_password_fails_with_connection_error(auth_server: NatsServer) -> None:
    """A wrong password fails fast with NatsConnectionError that says authorization failed, and hides secrets."""
    config = NatsConfig(url=auth_server.url, user="u", password="wrong-" + SECRET)
    with capture_logs() as logs, pytest.raises(NatsConnectionError, match=r"(?i)authorization") as info:
        await asyncio.wait_for(ConnectionManager(config).connect(), timeout=5)
    assert SECRET not in str(info.value)
    assert SECRET not in str(logs)
    assert SECRET not in repr(config)


async def test_missing_credentials_fail(auth_server: NatsServer) -> None:
    """Connecting without credentials to a server that needs them fails with NatsConnectionError."""
    with pytest.raises(NatsConnectionError, match=auth_server.url):
        await asyncio.wait_for(ConnectionManager(NatsConfig(url=auth_server.url)).connect(), timeout=5)


async def test_credentials_in_url_are_not_logged(auth_server: NatsServer) -> None:
    """Credentials embedded in the URL work and never appear in logs, errors or repr."""
    url = auth_server.url.replace("nats://", f"nats://u:{SECRET}@")
    with capture_logs() as logs:
        async with ConnectionManager(NatsConfig(url=url)) as manager:
            assert manager.client.is_connected
    assert SECRET not in str(logs)
    assert events(logs, "nats.connected")
    bad = auth_server.url.replace("nats://", f"nats://u:x{SECRET}@")
    with pytest.raises(NatsConnectionError) as info:
        await asyncio.wait_for(ConnectionManager(NatsConfig(url=bad)).connect(), timeout=5)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(NatsConfig(url=bad))


async def test_token_auth(token_server: NatsServer) -> None:
    """NatsConfig(token=) authenticates; a wrong token fails with NatsConnectionError; the token is never shown."""
    config = NatsConfig(url=token_server.url, token=SECRET)
    with capture_logs() as logs:
        async with ConnectionManager(config) as manager:
            assert manager.client.is_connected
        wrong = NatsConfig(url=token_server.url, token="not-" + SECRET)
        with pytest.raises(NatsConnectionError, match=r"(?i)authorization") as info:
            await asyncio.wait_for(ConnectionManager(wrong).connect(), timeout=5)
    assert SECRET not in str(logs)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(config)


# -- resolve_connection ---------------------------------------------------------------------------------


def test_resolve_connection_ownership(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared manager is not owned; a config, URL string or None gives a new owned manager."""
    monkeypatch.setenv("SHIPKIT_NATS_URL", "nats://env-host:4222")
    shared = ConnectionManager(NatsConfig(url="nats://a:1"))
    assert resolve_connection(shared) == (shared, False)
    config = NatsConfig(url="nats://b:2")
    manager, owned = resolve_connection(config)
    assert owned
    assert manager.config is config
    manager, owned = resolve_connection("nats://c:3,nats://d:4")
    assert owned
    assert manager.config.servers == ["nats://c:3", "nats://d:4"]
    manager, owned = resolve_connection(None)
    assert owned
    assert manager.config.url == "nats://env-host:4222"
    assert manager.provision == "create"


def test_connection_errors_are_shipkit_errors() -> None:
    """The connection errors a caller catches are all ShipkitErrors."""
    for cls in (NatsConnectionError, NotConnectedError, NatsTimeoutError, ProvisioningError):
        assert issubclass(cls, ShipkitError)


async def test_replicas_setting_raises_r1_declarations_only(shipkit_config: NatsConfig) -> None:
    """The manager's replicas apply to what is declared at R1 and leave an explicit count alone."""
    manager = ConnectionManager(shipkit_config.model_copy(update={"replicas": 3}))
    assert manager.replicated(StreamConfig.new("A", "a.>")).replicas == 3
    assert manager.replicated(StreamConfig.new("A", "a.>").with_replicas(2)).replicas == 2
    assert manager.replicated(KvBucketConfig(bucket="b")).replicas == 3
    assert manager.replicated(ObjectStoreConfig(bucket="o")).replicas == 3


async def test_verify_mode_refuses_other_replicas(shipkit_config: NatsConfig, shipkit_nats_url: str) -> None:
    """In verify mode an existing stream with other replicas than declared is refused, naming both counts."""
    async with stock_client(shipkit_nats_url) as nc:
        await nc.jetstream().add_stream(name="R1ONLY", subjects=["r1.>"])
    manager = ConnectionManager(shipkit_config, provision="verify")
    manager.replicas = 3
    async with manager:
        with pytest.raises(ProvisioningError, match=r"'R1ONLY' exists with 1 replica\(s\) but 3 are declared"):
            await manager.ensure_stream(StreamConfig.new("R1ONLY", "r1.>"))


def test_replicas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHIPKIT_REPLICAS sets NatsConfig.replicas; a bad value is a ConfigurationError naming the variable."""
    monkeypatch.setenv("SHIPKIT_REPLICAS", "3")
    assert NatsConfig(url="nats://x:1").replicas == 3
    monkeypatch.setenv("SHIPKIT_REPLICAS", "three")
    with pytest.raises(ConfigurationError, match="SHIPKIT_REPLICAS"):
        NatsConfig(url="nats://x:1")
