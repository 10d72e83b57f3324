"""BeingSnapshots against a real nats-server: id scheme, JSON shape, same-second ids, seed interop."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta as RawObjectMeta

from shipkit.connection import ConnectionManager
from shipkit.errors import InvalidNameError, ObjectNotFoundError, SerializationError
from shipkit.primitives import snapshots as snapshots_module
from shipkit.primitives.snapshots import BeingSnapshots, parse_snapshot_id

FIXED_NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


@pytest_asyncio.fixture
async def snaps(shipkit_connection: ConnectionManager) -> AsyncIterator[BeingSnapshots]:
    async with BeingSnapshots(shipkit_connection) as opened:
        yield opened


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Make every snapshot taken in this test fall in the same UTC second."""

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> FrozenDatetime:
            return cls.fromtimestamp(FIXED_NOW.timestamp(), tz)

    monkeypatch.setattr(snapshots_module, "datetime", FrozenDatetime)
    return FIXED_NOW


async def raw_snapshot_bytes(js: JetStreamContext, snapshot_id: str) -> bytes:
    store = await js.object_store("snapshots")
    result = await store.get(snapshot_id)
    assert result.data is not None
    return result.data


async def test_take_names_the_snapshot_by_being_and_utc_second(snaps: BeingSnapshots) -> None:
    """take returns {being_id}_{YYYYMMDD_HHMMSS} for the current UTC second."""
    before = datetime.now(UTC).replace(microsecond=0)
    snapshot_id = await snaps.take("scout-1", {"step": 1}, "checkpoint")
    after = datetime.now(UTC)
    match = re.fullmatch(r"scout-1_(\d{8}_\d{6})", snapshot_id)
    assert match is not None
    stamp = datetime.strptime(match[1], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= after


async def test_snapshot_json_has_contract_key_order(
    snaps: BeingSnapshots, raw_js: JetStreamContext, frozen_clock: datetime
) -> None:
    """The stored body is compact JSON with keys being_id, reason, state, created in that order."""
    state = {"memory": ["a", "b"], "step": 7}
    snapshot_id = await snaps.take("scout-1", state, "before upgrade")
    raw = await raw_snapshot_bytes(raw_js, snapshot_id)
    document = json.loads(raw)
    assert list(document) == ["being_id", "reason", "state", "created"]
    assert document == {
        "being_id": "scout-1",
        "reason": "before upgrade",
        "state": state,
        "created": frozen_clock.isoformat(),
    }
    assert raw == json.dumps(document, separators=(",", ":")).encode()


async def test_description_is_the_reason(snaps: BeingSnapshots, raw_js: JetStreamContext) -> None:
    """The object's description is the reason, as the seed writes it."""
    snapshot_id = await snaps.take("scout-1", None, "nightly backup")
    info = await snaps.store.info(snapshot_id)
    assert info is not None
    assert info.description == "nightly backup"
    raw_info = await (await raw_js.object_store("snapshots")).get_info(snapshot_id)
    assert raw_info.description == "nightly backup"


async def test_restore_returns_the_state_member(snaps: BeingSnapshots) -> None:
    """restore returns exactly the state passed to take, for any JSON value."""
    for state in ({"nested": {"list": [1, 2.5, None]}}, [1, 2], "text", 3, None):
        snapshot_id = await snaps.take(f"being-{type(state).__name__}", state, "r")
        assert await snaps.restore(snapshot_id) == state


async def test_same_second_snapshots_are_all_kept(snaps: BeingSnapshots, frozen_clock: datetime) -> None:
    """Three snapshots in one second get ids base, base_2, base_3 and each restores its own state."""
    ids = [await snaps.take("scout-1", {"n": n}, f"take {n}") for n in range(3)]
    base = f"scout-1_{frozen_clock:%Y%m%d_%H%M%S}"
    assert ids == [base, f"{base}_2", f"{base}_3"]
    assert [await snaps.restore(snapshot_id) for snapshot_id in ids] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_concurrent_same_second_snapshots_never_collide(snaps: BeingSnapshots, frozen_clock: datetime) -> None:
    """Snapshots taken concurrently in one second all get distinct ids (the server arbitrates)."""
    ids = await asyncio.gather(*(snaps.take("scout-1", {"n": n}, "race") for n in range(5)))
    assert len(set(ids)) == 5
    states = sorted([(await snaps.restore(snapshot_id))["n"] for snapshot_id in ids])
    assert states == [0, 1, 2, 3, 4]


async def test_restore_of_missing_snapshot_is_none(snaps: BeingSnapshots) -> None:
    """restore of an unknown id returns None."""
    assert await snaps.restore("nobody_20000101_000000") is None


async def test_restore_of_a_non_snapshot_object_raises(snaps: BeingSnapshots) -> None:
    """An object in the bucket that is not snapshot JSON raises SerializationError on restore."""
    await snaps.store.put("junk", b"[1, 2, 3]")
    with pytest.raises(SerializationError):
        await snaps.restore("junk")


async def test_restores_a_snapshot_written_by_a_seed_agent(snaps: BeingSnapshots, raw_js: JetStreamContext) -> None:
    """A snapshot a noesis-ship agent wrote (seed id and JSON) restores and lists under its being."""
    seed_id = "scout-1_20250101_120000"
    body = b'{"being_id":"scout-1","reason":"seed","state":{"from":"rust"},"created":"2025-01-01T12:00:00Z"}'
    raw_store = await raw_js.object_store("snapshots")
    await raw_store.put(seed_id, body, meta=RawObjectMeta(description="seed"))
    assert await snaps.restore(seed_id) == {"from": "rust"}
    assert [meta.name for meta in await snaps.list("scout-1")] == [seed_id]


async def test_suffixed_ids_read_as_plain_objects_for_a_seed_reader(
    snaps: BeingSnapshots, raw_js: JetStreamContext, frozen_clock: datetime
) -> None:
    """A raw client reads a same-second snapshot by its suffixed id like any other object."""
    await snaps.take("scout-1", {"n": 1}, "first")
    second = await snaps.take("scout-1", {"n": 2}, "second")
    assert second.endswith("_2")
    assert json.loads(await raw_snapshot_bytes(raw_js, second))["state"] == {"n": 2}


async def test_list_filters_by_being_and_orders_newest_last(snaps: BeingSnapshots, raw_js: JetStreamContext) -> None:
    """list(being_id) keeps only that being's snapshots (not a being whose id extends it), oldest first."""
    raw_store = await raw_js.object_store("snapshots")
    stamps = [(FIXED_NOW + timedelta(seconds=s)).strftime("%Y%m%d_%H%M%S") for s in (5, 0, 9)]
    for stamp in stamps:
        await raw_store.put(f"a_{stamp}", b'{"being_id":"a","reason":"r","state":1,"created":"x"}')
        await raw_store.put(f"a_b_{stamp}", b'{"being_id":"a_b","reason":"r","state":2,"created":"x"}')
    await raw_store.put(f"a_{stamps[1]}_2", b'{"being_id":"a","reason":"r","state":3,"created":"x"}')
    ordered = sorted(stamps)
    assert [meta.name for meta in await snaps.list("a")] == [
        f"a_{ordered[0]}",
        f"a_{ordered[0]}_2",
        f"a_{ordered[1]}",
        f"a_{ordered[2]}",
    ]
    assert [meta.name for meta in await snaps.list("a_b")] == [f"a_b_{stamp}" for stamp in ordered]
    assert len(await snaps.list()) == 7
    assert await snaps.list("nobody") == []


async def test_delete_removes_a_snapshot(snaps: BeingSnapshots) -> None:
    """delete makes a snapshot unrestorable; deleting it again raises ObjectNotFoundError."""
    snapshot_id = await snaps.take("scout-1", {"x": 1}, "temp")
    await snaps.delete(snapshot_id)
    assert await snaps.restore(snapshot_id) is None
    assert await snaps.list("scout-1") == []
    with pytest.raises(ObjectNotFoundError):
        await snaps.delete(snapshot_id)


async def test_being_id_is_validated(snaps: BeingSnapshots) -> None:
    """An empty being id or one with control characters raises InvalidNameError."""
    with pytest.raises(InvalidNameError):
        await snaps.take("", {}, "r")
    with pytest.raises(InvalidNameError):
        await snaps.take("bad\nid", {}, "r")


def test_bad_bucket_name_is_refused() -> None:
    """A custom bucket name outside [A-Za-z0-9_-]+ raises InvalidNameError."""
    with pytest.raises(InvalidNameError):
        BeingSnapshots(bucket="no.dots")


def test_parse_snapshot_id() -> None:
    """Ids split into being, stamp and same-second sequence; other names are not snapshot ids."""
    assert parse_snapshot_id("a_b_20260304_050607") == ("a_b", "20260304_050607", 1)
    assert parse_snapshot_id("a_20260304_050607_12") == ("a", "20260304_050607", 12)
    assert parse_snapshot_id("readme.txt") is None
