"""HealthMetrics against a real nats-server: metrics stored as is, TTL expiry."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from nats.aio.client import Client

from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import InvalidNameError
from shipkit.primitives.health import SHIP_HEALTH_BUCKET, HealthMetrics


@pytest_asyncio.fixture
async def health(shipkit_connection: ConnectionManager) -> HealthMetrics:
    """A connected HealthMetrics on the default ship_health bucket."""
    return await HealthMetrics(shipkit_connection).connect()


async def test_bucket_is_created_with_history_5_and_ttl_120(health: HealthMetrics, raw: Client) -> None:
    """connect() provisions KV_ship_health with history 5 and a 120 s TTL."""
    info = await raw.jetstream().stream_info("KV_ship_health")
    assert info.config.max_msgs_per_subject == 5
    assert info.config.max_age == 120
    assert health.bucket == SHIP_HEALTH_BUCKET.bucket == "ship_health"


async def test_report_stores_the_metrics_json_as_is(health: HealthMetrics, raw: Client) -> None:
    """report() writes exactly the metrics as compact JSON (no envelope) under $KV.ship_health.{source}."""
    await health.report("forge", {"cpu_percent": 12.5, "queue_depth": 3, "ok": True})
    entry = await (await raw.jetstream().key_value("ship_health")).get("forge")
    assert entry.value == b'{"cpu_percent":12.5,"queue_depth":3,"ok":true}'


async def test_get_returns_the_latest_report(health: HealthMetrics) -> None:
    """get() returns the last metrics reported by a source, and None for a silent one."""
    await health.report("forge", {"n": 1})
    await health.report("forge", {"n": 2})
    assert await health.get("forge") == {"n": 2}
    assert await health.get("silent") is None


async def test_get_all_maps_sources_to_metrics(health: HealthMetrics, raw: Client) -> None:
    """get_all() returns every source's current metrics, including ones a Rust agent reported."""
    assert await health.get_all() == {}
    await health.report("forge", {"n": 1})
    await (await raw.jetstream().key_value("ship_health")).put("rusty", b'{"memory_mb":256.0}')
    assert await health.get_all() == {"forge": {"n": 1}, "rusty": {"memory_mb": 256.0}}


async def test_reports_expire_after_the_bucket_ttl(shipkit_connection: ConnectionManager) -> None:
    """With a 0.2 s TTL bucket, a report disappears from get() and get_all() on its own."""
    config = KvBucketConfig(bucket="health_fast", history=5, ttl_s=0.2)
    health = await HealthMetrics(shipkit_connection, bucket_config=config).connect()
    await health.report("forge", {"n": 1})
    assert await health.get("forge") == {"n": 1}
    # Expiry is a server timer with no event to wait on, so poll briefly, bounded to 5 s.
    for _ in range(100):
        if await health.get("forge") is None:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the report did not expire within 5 s of a 0.2 s TTL")
    assert await health.get_all() == {}


async def test_invalid_sources_raise_before_anything_is_sent() -> None:
    """A source that is not a valid KV key raises InvalidNameError without a connection."""
    health = HealthMetrics(NatsConfig.from_url("nats://127.0.0.1:1"))
    for call in (health.report("a b", {}), health.get("a.*")):
        with pytest.raises(InvalidNameError, match="health source"):
            await call
