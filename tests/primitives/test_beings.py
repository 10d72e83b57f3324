"""BeingRegistry against a real nats-server, including interop with seed-shaped (Rust) entries."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from nats.aio.client import Client
from structlog.testing import capture_logs

from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import ConfigurationError, InvalidNameError, KeyNotFoundError, SerializationError
from shipkit.models import BeingState, BeingStatus, parse_timestamp
from shipkit.primitives.beings import BEINGS_STATUS_BUCKET, BeingRegistry

TIMEOUT = 5
CONTRACT_FIELDS = [
    "being_id",
    "state",
    "current_task",
    "last_heartbeat",
    "uptime_seconds",
    "memory_mb",
    "capabilities",
    "metadata",
]
# What a noesis-ship (Rust, serde + chrono) agent writes: contract field order, `Z` with nanoseconds.
RUST_STATUS = (
    b'{"being_id":"rusty","state":"working","current_task":"TASK-159",'
    b'"last_heartbeat":"2026-11-27T10:15:30.123456789Z","uptime_seconds":3600,"memory_mb":512.5,'
    b'"capabilities":["code","rust"],"metadata":{"host":"dgx"}}'
)


@pytest_asyncio.fixture
async def registry(shipkit_connection: ConnectionManager) -> BeingRegistry:
    """A connected registry on the default beings_status bucket."""
    return await BeingRegistry(shipkit_connection).connect()


async def raw_status(raw: Client, being_id: str) -> bytes:
    entry = await (await raw.jetstream().key_value("beings_status")).get(being_id)
    assert entry.value is not None
    return entry.value


async def test_bucket_is_created_with_contract_history_and_ttl(registry: BeingRegistry, raw: Client) -> None:
    """connect() provisions KV_beings_status with history 5 and a 300 s TTL."""
    info = await raw.jetstream().stream_info("KV_beings_status")
    assert info.config.max_msgs_per_subject == 5
    assert info.config.max_age == 300
    assert registry.bucket == BEINGS_STATUS_BUCKET.bucket == "beings_status"


async def test_register_writes_an_idle_status_in_contract_shape(registry: BeingRegistry, raw: Client) -> None:
    """register() writes state idle with the contract's field order and JSON types."""
    status = await registry.register("forge", capabilities=["code", "review"], metadata={"zone": "a"})
    assert status.state is BeingState.IDLE
    document = json.loads(await raw_status(raw, "forge"))
    assert list(document) == CONTRACT_FIELDS
    assert document["state"] == "idle"
    assert document["current_task"] is None
    assert document["capabilities"] == ["code", "review"]
    assert document["metadata"] == {"zone": "a"}
    assert document["memory_mb"] is None
    assert type(document["uptime_seconds"]) is int
    assert parse_timestamp(document["last_heartbeat"]).utcoffset() is not None
    assert document["last_heartbeat"].endswith("+00:00")


async def test_get_status_returns_what_register_wrote(registry: BeingRegistry) -> None:
    """get_status() reads back the registered status; an unknown being is None."""
    written = await registry.register("forge", capabilities=["code"])
    assert await registry.get_status("forge") == written
    assert await registry.get_status("ghost") is None


async def test_update_status_sets_state_and_task(registry: BeingRegistry, raw: Client) -> None:
    """update_status() stores the new state (lowercase on the wire) and task, keeping capabilities."""
    await registry.register("forge", capabilities=["code"])
    status = await registry.update_status("forge", "working", current_task="TASK-7")
    assert (status.state, status.current_task, status.capabilities) == (BeingState.WORKING, "TASK-7", ["code"])
    document = json.loads(await raw_status(raw, "forge"))
    assert (document["state"], document["current_task"]) == ("working", "TASK-7")
    cleared = await registry.update_status("forge", BeingState.BLOCKED)
    assert (cleared.state, cleared.current_task) == (BeingState.BLOCKED, None)


async def test_update_status_refuses_an_unknown_state(registry: BeingRegistry) -> None:
    """A state outside idle|working|blocked|offline raises ConfigurationError and writes nothing."""
    await registry.register("forge")
    with pytest.raises(ConfigurationError, match="sleeping"):
        await registry.update_status("forge", "sleeping")
    status = await registry.get_status("forge")
    assert status is not None
    assert status.state is BeingState.IDLE


async def test_update_status_and_heartbeat_of_unknown_being_raise_key_not_found(registry: BeingRegistry) -> None:
    """update_status() and heartbeat() on a being that is not registered raise KeyNotFoundError."""
    with pytest.raises(KeyNotFoundError, match="ghost"):
        await registry.update_status("ghost", "working")
    with pytest.raises(KeyNotFoundError, match="ghost"):
        await registry.heartbeat("ghost")
    await registry.register("gone")
    await registry.unregister("gone")
    with pytest.raises(KeyNotFoundError):
        await registry.heartbeat("gone")


async def test_heartbeat_stores_integer_uptime_and_memory(registry: BeingRegistry, raw: Client) -> None:
    """heartbeat() truncates uptime to an integer, stores memory_mb as a float and refreshes last_heartbeat."""
    registered = await registry.register("forge")
    status = await registry.heartbeat("forge", uptime_seconds=12.9, memory_mb=256)
    assert (status.uptime_seconds, status.memory_mb) == (12, 256.0)
    assert parse_timestamp(status.last_heartbeat) >= parse_timestamp(registered.last_heartbeat)
    document = json.loads(await raw_status(raw, "forge"))
    assert type(document["uptime_seconds"]) is int
    assert document["uptime_seconds"] == 12
    assert document["memory_mb"] == 256.0
    assert list(document) == CONTRACT_FIELDS


async def test_heartbeat_without_uptime_reports_time_since_registration(
    registry: BeingRegistry, shipkit_connection: ConnectionManager
) -> None:
    """Without uptime_seconds, the registering registry fills in whole seconds; another one keeps the stored value."""
    await registry.register("forge")
    status = await registry.heartbeat("forge", memory_mb=1.5)
    assert type(status.uptime_seconds) is int
    assert 0 <= status.uptime_seconds < 60
    await registry.heartbeat("forge", uptime_seconds=999)
    other = await BeingRegistry(shipkit_connection).connect()
    kept = await other.heartbeat("forge")
    assert (kept.uptime_seconds, kept.memory_mb) == (999, 1.5)


async def test_unregister_removes_the_being(registry: BeingRegistry) -> None:
    """unregister() deletes the entry; unregistering an unknown being is not an error."""
    await registry.register("forge")
    await registry.unregister("forge")
    assert await registry.get_status("forge") is None
    assert await registry.get_online() == []
    await registry.unregister("never-registered")


async def test_get_online_lists_every_present_entry_sorted(registry: BeingRegistry) -> None:
    """get_online() returns all beings with an entry, offline state included, sorted by id."""
    await registry.register("zeta")
    await registry.register("alpha")
    await registry.register("mid")
    await registry.update_status("mid", BeingState.OFFLINE)
    await registry.register("left")
    await registry.unregister("left")
    online = await registry.get_online()
    assert [s.being_id for s in online] == ["alpha", "mid", "zeta"]
    assert online[1].state is BeingState.OFFLINE


async def test_get_online_of_empty_registry_is_empty(registry: BeingRegistry) -> None:
    """With no beings, get_online() is []."""
    assert await registry.get_online() == []


async def test_invalid_being_ids_raise_before_anything_is_sent() -> None:
    """Being ids that are not valid KV keys raise InvalidNameError even without a connection."""
    registry = BeingRegistry(NatsConfig.from_url("nats://127.0.0.1:1"))
    for call in (
        registry.register("a b"),
        registry.update_status("a.*", "idle"),
        registry.heartbeat(""),
        registry.unregister("x>"),
        registry.get_status("..."),
    ):
        with pytest.raises(InvalidNameError, match="being id"):
            await call


async def test_custom_bucket_config_is_used(shipkit_connection: ConnectionManager) -> None:
    """bucket_config replaces the default bucket (name, history, TTL)."""
    config = KvBucketConfig(bucket="beings_test", history=2, ttl_s=30)
    registry = await BeingRegistry(shipkit_connection, bucket_config=config).connect()
    await registry.register("forge")
    info = await shipkit_connection.jetstream.stream_info("KV_beings_test")
    assert (info.config.max_msgs_per_subject, info.config.max_age) == (2, 30)
    assert await registry.get_status("forge") is not None


# -- interop with noesis-ship --------------------------------------------------------------


async def test_reads_a_status_written_by_a_rust_agent(registry: BeingRegistry, raw: Client) -> None:
    """A seed-shaped entry (Z timestamp with nanoseconds, integer uptime) put raw is read as a BeingStatus."""
    await (await raw.jetstream().key_value("beings_status")).put("rusty", RUST_STATUS)
    status = await registry.get_status("rusty")
    assert status == BeingStatus(
        being_id="rusty",
        state=BeingState.WORKING,
        current_task="TASK-159",
        last_heartbeat="2026-11-27T10:15:30.123456789Z",
        uptime_seconds=3600,
        memory_mb=512.5,
        capabilities=["code", "rust"],
        metadata={"host": "dgx"},
    )
    assert [s.being_id for s in await registry.get_online()] == ["rusty"]


async def test_heartbeat_on_a_rust_entry_writes_back_contract_shape(registry: BeingRegistry, raw: Client) -> None:
    """shipkit's heartbeat on a Rust-written entry keeps its fields and writes the contract's order and types."""
    await (await raw.jetstream().key_value("beings_status")).put("rusty", RUST_STATUS)
    await registry.heartbeat("rusty", uptime_seconds=3630.7)
    document = json.loads(await raw_status(raw, "rusty"))
    assert list(document) == CONTRACT_FIELDS
    assert document["uptime_seconds"] == 3630
    assert type(document["uptime_seconds"]) is int
    assert (document["state"], document["current_task"], document["memory_mb"]) == ("working", "TASK-159", 512.5)
    assert document["capabilities"] == ["code", "rust"]
    assert document["metadata"] == {"host": "dgx"}
    assert parse_timestamp(document["last_heartbeat"]) > parse_timestamp("2026-11-27T10:15:30Z")


async def test_reads_an_entry_in_another_field_order_with_unknown_fields(registry: BeingRegistry, raw: Client) -> None:
    """Readers accept any field order and ignore unknown fields."""
    shuffled = (
        b'{"metadata":null,"capabilities":[],"future_field":1,"memory_mb":null,"uptime_seconds":5,'
        b'"last_heartbeat":"2026-11-27T10:15:30Z","current_task":null,"state":"blocked","being_id":"odd"}'
    )
    await (await raw.jetstream().key_value("beings_status")).put("odd", shuffled)
    status = await registry.get_status("odd")
    assert status is not None
    assert (status.state, status.uptime_seconds) == (BeingState.BLOCKED, 5)


async def test_invalid_entries_raise_on_get_and_are_skipped_by_get_online(registry: BeingRegistry, raw: Client) -> None:
    """A garbage or wrongly shaped entry makes get_status raise SerializationError; get_online logs and skips it."""
    raw_kv = await raw.jetstream().key_value("beings_status")
    await raw_kv.put("garbage", b"not json")
    await raw_kv.put("shape", b'{"being_id":"shape","state":"dancing"}')
    await registry.register("fine")
    with pytest.raises(SerializationError, match="beings_status/garbage"):
        await registry.get_status("garbage")
    with pytest.raises(SerializationError, match="beings_status/shape"):
        await registry.get_status("shape")
    with capture_logs() as logs:
        online = await registry.get_online()
    assert [s.being_id for s in online] == ["fine"]
    assert {e["event"] for e in logs} >= {"kv.value_undecodable", "beings.status_invalid"}


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_heartbeats_never_revert_a_status_change(
    registry: BeingRegistry, shipkit_config: NatsConfig
) -> None:
    """Many heartbeats from two registries on separate connections racing an update_status lose nothing."""
    await registry.register("forge", capabilities=["code"])
    async with BeingRegistry(shipkit_config) as other:
        beats = [
            (registry if i % 2 else other).heartbeat("forge", uptime_seconds=i, memory_mb=float(i)) for i in range(30)
        ]
        change = registry.update_status("forge", "working", current_task="TASK-42")
        results = await asyncio.wait_for(asyncio.gather(*beats[:15], change, *beats[15:]), timeout=TIMEOUT)
        final = await other.get_status("forge")
    assert final is not None
    assert (final.state, final.current_task, final.capabilities) == (BeingState.WORKING, "TASK-42", ["code"])
    assert len(results) == 31
    # register + 31 compare-and-set writes, each landing exactly once despite the retries.
    info = await registry.store.connection.jetstream.stream_info("KV_beings_status")
    assert info.state.last_seq == 32
