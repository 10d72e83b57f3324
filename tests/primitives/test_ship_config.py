"""ShipConfig against a real nats-server: settings shared with noesis-ship agents."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from nats.aio.client import Client

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import InvalidNameError, SerializationError
from shipkit.primitives.ship_config import SHIP_CONFIG_BUCKET, ShipConfig

TIMEOUT = 5


@pytest_asyncio.fixture
async def config(shipkit_connection: ConnectionManager) -> ShipConfig:
    """A connected ShipConfig on the default ship_config bucket."""
    return await ShipConfig(shipkit_connection).connect()


async def test_bucket_is_created_with_history_5_and_no_ttl(config: ShipConfig, raw: Client) -> None:
    """connect() provisions KV_ship_config with history 5 and no max age."""
    info = await raw.jetstream().stream_info("KV_ship_config")
    assert info.config.max_msgs_per_subject == 5
    assert not info.config.max_age
    assert config.bucket == SHIP_CONFIG_BUCKET.bucket == "ship_config"


async def test_set_then_get_round_trips_any_json(config: ShipConfig) -> None:
    """set() stores JSON values that get() returns, and returns increasing revisions."""
    first = await config.set("log.level", "debug")
    second = await config.set("limits", {"max_jobs": 4, "ratio": 0.25})
    assert second > first
    assert await config.get("log.level") == "debug"
    assert await config.get("limits") == {"max_jobs": 4, "ratio": 0.25}


async def test_get_returns_the_default_for_unset_or_deleted_keys(config: ShipConfig) -> None:
    """get(key, default) falls back to default when the key is unset or deleted, and to None without one."""
    assert await config.get("missing") is None
    assert await config.get("missing", default="info") == "info"
    await config.set("temp", 1)
    await config.delete("temp")
    assert await config.get("temp", default=0) == 0


async def test_falsy_values_are_not_replaced_by_the_default(config: ShipConfig) -> None:
    """A stored 0, false or empty string is returned, not the default."""
    await config.set("zero", 0)
    await config.set("off", False)
    await config.set("empty", "")
    assert [await config.get(k, default="dflt") for k in ("zero", "off", "empty")] == [0, False, ""]


async def test_keys_and_get_all_list_current_settings(config: ShipConfig) -> None:
    """keys() lists present keys sorted (deleted ones left out); get_all() maps them to values."""
    assert await config.keys() == []
    await config.set("b", 2)
    await config.set("a", 1)
    await config.set("c", 3)
    await config.delete("c")
    assert await config.keys() == ["a", "b"]
    assert await config.get_all() == {"a": 1, "b": 2}


async def test_watch_passes_through_changes_and_deletes(config: ShipConfig) -> None:
    """watch() yields current settings first, then sets and deletes as they happen."""
    await config.set("log.level", "info")
    async with config.watch() as watch:
        first = await asyncio.wait_for(anext(watch), TIMEOUT)
        await config.set("log.level", "debug")
        changed = await asyncio.wait_for(anext(watch), TIMEOUT)
        await config.delete("log.level")
        deleted = await asyncio.wait_for(anext(watch), TIMEOUT)
    assert (first.key, first.value) == ("log.level", "info")
    assert (changed.value, changed.operation) == ("debug", "put")
    assert (deleted.value, deleted.operation) == (None, "delete")


async def test_interop_with_raw_clients(config: ShipConfig, raw: Client) -> None:
    """A raw client's JSON is read back, and shipkit's writes are compact JSON under $KV.ship_config.{key}."""
    raw_kv = await raw.jetstream().key_value("ship_config")
    await raw_kv.put("llm.provider", b'"anthropic"')
    assert await config.get("llm.provider") == "anthropic"
    await config.set("fleet", {"size": 3, "names": ["a", "b"]})
    assert (await raw_kv.get("fleet")).value == b'{"size":3,"names":["a","b"]}'


async def test_garbage_value_raises_serialization_error(config: ShipConfig, raw: Client) -> None:
    """get() of a value that is not JSON raises SerializationError naming bucket and key."""
    await (await raw.jetstream().key_value("ship_config")).put("broken", b"{")
    with pytest.raises(SerializationError, match="ship_config/broken"):
        await config.get("broken", default="never used")


async def test_invalid_keys_raise_before_anything_is_sent() -> None:
    """Keys that are not valid KV keys raise InvalidNameError without a connection."""
    config = ShipConfig(NatsConfig.from_url("nats://127.0.0.1:1"))
    for call in (config.set("a b", 1), config.get("*"), config.delete("x..y")):
        with pytest.raises(InvalidNameError):
            await call
    with pytest.raises(InvalidNameError):
        config.watch("a.>.b")
