"""KvStore against a real nats-server: JSON values, CAS, history, scans and the typed watch."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from structlog.testing import capture_logs

from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    BucketNotFoundError,
    ConfigurationError,
    InvalidNameError,
    KeyNotFoundError,
    NotConnectedError,
    RevisionConflictError,
    SerializationError,
)
from shipkit.primitives import _kv_watch
from shipkit.primitives.kv import KvEntry, KvStore, KvWatch

TIMEOUT = 5


@pytest_asyncio.fixture
async def kv(shipkit_connection: ConnectionManager) -> KvStore:
    """A connected store on a fresh bucket ``things``."""
    return await KvStore("things", shipkit_connection).connect()


async def next_entry(watch: KvWatch) -> KvEntry:
    return await asyncio.wait_for(anext(watch), timeout=TIMEOUT)


# -- lifecycle and validation ---------------------------------------------------------------


async def test_connect_creates_bucket_with_declared_history_and_ttl(shipkit_connection: ConnectionManager) -> None:
    """connect() provisions KV_{bucket} with the declared history and TTL."""
    config = KvBucketConfig.new("counters").with_history(3).with_ttl_secs(60)
    await KvStore(config, shipkit_connection).connect()
    info = await shipkit_connection.jetstream.stream_info("KV_counters")
    assert info.config.max_msgs_per_subject == 3
    assert info.config.max_age == 60
    assert info.config.subjects == ["$KV.counters.>"]


async def test_a_bucket_name_string_gets_the_seed_defaults(shipkit_connection: ConnectionManager) -> None:
    """KvStore("name") is a bucket with history 5 and no TTL."""
    store = await KvStore("plain", shipkit_connection).connect()
    assert store.bucket == "plain"
    info = await shipkit_connection.jetstream.stream_info("KV_plain")
    assert info.config.max_msgs_per_subject == 5
    assert not info.config.max_age


def test_invalid_bucket_name_is_refused_at_construction() -> None:
    """A bucket name with a dot raises InvalidNameError before any connection exists."""
    with pytest.raises(InvalidNameError, match="bucket"):
        KvStore("bad.bucket")


@pytest.mark.parametrize("key", ["", "has space", "a..b", ".lead", "trail.", "wild*", "gt>", "x\n"])
async def test_invalid_keys_raise_before_anything_is_sent(key: str) -> None:
    """Every key-taking method validates the key before touching the (here absent) connection."""
    store = KvStore("things", NatsConfig.from_url("nats://127.0.0.1:1"))
    calls: list[Any] = [
        store.get(key),
        store.get_entry(key),
        store.put(key, 1),
        store.create(key, 1),
        store.update(key, 1, 1),
        store.delete(key),
        store.purge(key),
        store.history(key),
        store.read_modify_write(key, lambda v: v),
    ]
    for call in calls:
        with pytest.raises(InvalidNameError):
            await call


@pytest.mark.parametrize("pattern", ["", "a..b", "a.>.b", "a*", "sp ace"])
def test_invalid_watch_patterns_raise_before_anything_is_sent(pattern: str) -> None:
    """watch() validates its key pattern before checking the connection."""
    store = KvStore("things", NatsConfig.from_url("nats://127.0.0.1:1"))
    with pytest.raises(InvalidNameError):
        store.watch(pattern)


async def test_methods_before_connect_raise_not_connected(shipkit_connection: ConnectionManager) -> None:
    """A store that was never connected raises NotConnectedError, even on a live shared connection."""
    store = KvStore("things", shipkit_connection)
    with pytest.raises(NotConnectedError):
        await store.get("a")
    with pytest.raises(NotConnectedError):
        await store.put("a", 1)
    with pytest.raises(NotConnectedError):
        await store.keys()
    with pytest.raises(NotConnectedError):
        store.watch()


async def test_close_keeps_a_shared_connection_and_closes_an_owned_one(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """close() leaves a shared manager connected but disconnects one the store made itself."""
    shared = await KvStore("things", shipkit_connection).connect()
    await shared.close()
    assert shipkit_connection.is_connected
    with pytest.raises(NotConnectedError):
        await shared.get("a")

    async with KvStore("things", shipkit_nats_url) as owned:
        await owned.put("a", 1)
        manager = owned.connection
        assert manager.is_connected
    assert not manager.is_connected


async def test_store_of_a_closed_connection_raises_not_connected(kv: KvStore) -> None:
    """After the shared manager disconnects, operations raise NotConnectedError."""
    await kv.connection.close()
    with pytest.raises(NotConnectedError):
        await kv.put("a", 1)


# -- reads and writes -----------------------------------------------------------------------


async def test_put_then_get_round_trips_json_and_returns_revisions(kv: KvStore) -> None:
    """put returns increasing revisions and get returns the JSON value written."""
    first = await kv.put("count", {"count": 42, "tags": ["a", "b"], "ratio": 0.5, "none": None})
    second = await kv.put("other", "text")
    assert second > first >= 1
    assert await kv.get("count") == {"count": 42, "tags": ["a", "b"], "ratio": 0.5, "none": None}
    assert await kv.get("other") == "text"


async def test_values_are_compact_json_on_the_wire(kv: KvStore, raw: Client) -> None:
    """A raw client reads the exact compact JSON bytes shipkit wrote under $KV.{bucket}.{key}."""
    await kv.put("cfg", {"b": 1, "a": [1, 2]})
    entry = await (await raw.jetstream().key_value("things")).get("cfg")
    assert entry.value == b'{"b":1,"a":[1,2]}'


async def test_get_reads_values_written_by_a_raw_client(kv: KvStore, raw: Client) -> None:
    """A value put by another NATS client is read back decoded."""
    await (await raw.jetstream().key_value("things")).put("peer", b'{"from":"rust","n":1}')
    assert await kv.get("peer") == {"from": "rust", "n": 1}


async def test_get_of_missing_or_deleted_key_is_none(kv: KvStore) -> None:
    """A key never written and a deleted or purged key all read as None."""
    assert await kv.get("never") is None
    assert await kv.get_entry("never") is None
    await kv.put("gone", 1)
    await kv.delete("gone")
    assert await kv.get("gone") is None
    await kv.put("purged", 1)
    await kv.purge("purged")
    assert await kv.get_entry("purged") is None


async def test_get_entry_carries_revision_operation_and_creation_time(kv: KvStore) -> None:
    """get_entry returns key, value, the put's revision, operation put and a UTC timestamp."""
    revision = await kv.put("k", [1])
    entry = await kv.get_entry("k")
    assert entry is not None
    assert (entry.bucket, entry.key, entry.value) == ("things", "k", [1])
    assert (entry.revision, entry.operation) == (revision, "put")
    assert isinstance(entry.created, datetime)
    assert entry.created.utcoffset() is not None
    assert not entry.deleted


async def test_get_of_garbage_raises_serialization_error_naming_bucket_and_key(kv: KvStore, raw: Client) -> None:
    """A value that is not JSON makes get raise SerializationError naming bucket and key."""
    await (await raw.jetstream().key_value("things")).put("junk", b"\xff not json")
    with pytest.raises(SerializationError, match=r"things/junk"):
        await kv.get("junk")


async def test_missing_bucket_raises_bucket_not_found(kv: KvStore, raw: Client) -> None:
    """Once the bucket is deleted behind the store's back, reads and writes raise BucketNotFoundError."""
    await raw.jetstream().delete_key_value("things")
    with pytest.raises(BucketNotFoundError, match="things"):
        await kv.get("a")
    with pytest.raises(BucketNotFoundError, match="things"):
        await kv.put("a", 1)


async def test_unencodable_value_raises_serialization_error(kv: KvStore) -> None:
    """A value that is not JSON-able raises SerializationError and writes nothing."""
    with pytest.raises(SerializationError):
        await kv.put("x", object())
    assert await kv.keys() == []


async def test_keys_of_empty_bucket_is_empty_list(kv: KvStore) -> None:
    """keys() of an empty bucket is [] (nats-py raises NoKeysError)."""
    assert await kv.keys() == []


async def test_keys_lists_current_keys_sorted_without_deleted_ones(kv: KvStore) -> None:
    """keys() lists each present key once, sorted, leaving out deleted and purged keys."""
    for key in ["b", "a", "c.d", "a"]:
        await kv.put(key, 1)
    await kv.put("deleted", 1)
    await kv.delete("deleted")
    await kv.put("purged", 1)
    await kv.purge("purged")
    assert await kv.keys() == ["a", "b", "c.d"]
    assert await kv.keys("c.*") == ["c.d"]


async def test_get_all_returns_current_values_by_key(kv: KvStore) -> None:
    """get_all() maps every present key to its latest value."""
    await kv.put("a", 1)
    await kv.put("a", 2)
    await kv.put("b", {"x": True})
    await kv.put("c", 3)
    await kv.delete("c")
    assert await kv.get_all() == {"a": 2, "b": {"x": True}}


async def test_get_all_skips_undecodable_values_with_a_log_line(kv: KvStore, raw: Client) -> None:
    """A garbage value is left out of get_all() and logged with bucket and key."""
    await kv.put("good", 1)
    await (await raw.jetstream().key_value("things")).put("bad", b"{nope")
    with capture_logs() as logs:
        assert await kv.get_all() == {"good": 1}
    assert [e["key"] for e in logs if e["event"] == "kv.value_undecodable"] == ["bad"]


async def test_create_succeeds_once_and_conflicts_when_the_key_exists(kv: KvStore) -> None:
    """create writes a new key, raises RevisionConflictError if it exists, and works again after delete."""
    revision = await kv.create("lock", {"owner": "a"})
    with pytest.raises(RevisionConflictError):
        await kv.create("lock", {"owner": "b"})
    assert await kv.get("lock") == {"owner": "a"}
    await kv.delete("lock")
    assert await kv.create("lock", {"owner": "c"}) > revision


async def test_update_is_compare_and_set_on_revision(kv: KvStore) -> None:
    """update succeeds with the current revision and raises RevisionConflictError with a stale one."""
    first = await kv.put("n", 1)
    second = await kv.update("n", 2, first)
    assert second > first
    with pytest.raises(RevisionConflictError):
        await kv.update("n", 3, first)
    assert await kv.get("n") == 2


async def test_delete_with_a_stale_revision_conflicts(kv: KvStore) -> None:
    """delete(revision=...) refuses to delete a key written since that revision."""
    first = await kv.put("n", 1)
    await kv.put("n", 2)
    with pytest.raises(RevisionConflictError):
        await kv.delete("n", revision=first)
    assert await kv.get("n") == 2


async def test_history_lists_revisions_oldest_first_with_markers(kv: KvStore) -> None:
    """history() returns every retained revision including the delete marker."""
    revisions = [await kv.put("h", i) for i in range(3)]
    await kv.delete("h")
    history = await kv.history("h")
    assert [(e.value, e.operation) for e in history] == [(0, "put"), (1, "put"), (2, "put"), (None, "delete")]
    assert [e.revision for e in history[:3]] == revisions
    assert history[-1].deleted


async def test_history_is_bounded_by_the_bucket_history_and_reset_by_purge(
    shipkit_connection: ConnectionManager,
) -> None:
    """Only `history` revisions are kept, and a purge leaves just its marker."""
    store = await KvStore(KvBucketConfig.new("short").with_history(2), shipkit_connection).connect()
    for i in range(5):
        await store.put("k", i)
    assert [e.value for e in await store.history("k")] == [3, 4]
    await store.purge("k")
    assert [e.operation for e in await store.history("k")] == ["purge"]
    assert await store.history("never") == []


async def test_read_modify_write_creates_then_updates(kv: KvStore) -> None:
    """read_modify_write sees None for a missing key, then the stored value, and returns the written entry."""
    seen: list[Any] = []

    def bump(value: Any) -> int:
        seen.append(value)
        return (value or 0) + 1

    first = await kv.read_modify_write("n", bump)
    second = await kv.read_modify_write("n", bump)
    assert seen == [None, 1]
    assert (first.value, second.value) == (1, 2)
    assert second.revision > first.revision
    assert await kv.get("n") == 2


async def test_read_modify_write_aborts_without_writing_when_fn_raises(kv: KvStore) -> None:
    """An exception from fn propagates and nothing is written."""
    revision = await kv.put("n", 1)

    def refuse(value: Any) -> Any:
        raise KeyNotFoundError("nope")

    with pytest.raises(KeyNotFoundError):
        await kv.read_modify_write("n", refuse)
    entry = await kv.get_entry("n")
    assert entry is not None
    assert entry.revision == revision


async def test_concurrent_read_modify_writes_from_two_connections_lose_nothing(
    kv: KvStore, shipkit_config: NatsConfig
) -> None:
    """Forty concurrent increments split over two connections all land: the counter ends at 40."""
    async with KvStore("things", shipkit_config) as other:
        stores = [kv, other]
        await asyncio.wait_for(
            asyncio.gather(*(stores[i % 2].read_modify_write("counter", lambda v: (v or 0) + 1) for i in range(40))),
            timeout=TIMEOUT,
        )
    assert await kv.get("counter") == 40


async def test_read_modify_write_gives_up_after_its_retries(kv: KvStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """When every compare-and-set loses, RevisionConflictError is raised after 1 + retries attempts."""
    stale = await kv.put("n", 0)
    await kv.put("n", 1)
    reads = 0

    async def stale_read(key: str) -> KvEntry:
        nonlocal reads
        reads += 1
        return KvEntry("things", key, 0, stale)  # the server knows a newer revision

    monkeypatch.setattr(kv, "get_entry", stale_read)
    with pytest.raises(RevisionConflictError, match="after 2 retries"):
        await kv.read_modify_write("n", lambda v: v + 10, retries=2)
    assert reads == 3
    monkeypatch.undo()
    assert await kv.get("n") == 1


# -- watch ----------------------------------------------------------------------------------


async def test_watch_yields_current_values_then_changes_with_revisions(kv: KvStore) -> None:
    """A watch delivers present keys first (not deleted ones), then puts, deletes and purges as typed entries."""
    await kv.put("a", 1)
    await kv.put("b", 2)
    await kv.put("gone", 0)
    await kv.delete("gone")
    async with kv.watch() as watch:
        initial = [await next_entry(watch), await next_entry(watch)]
        assert [(e.key, e.value, e.operation) for e in initial] == [("a", 1, "put"), ("b", 2, "put")]
        put_revision = await kv.put("c", {"x": 1})
        change = await next_entry(watch)
        assert watch.initial_done
        assert (change.key, change.value, change.revision, change.operation) == ("c", {"x": 1}, put_revision, "put")
        await kv.delete("a")
        deleted = await next_entry(watch)
        assert (deleted.key, deleted.value, deleted.operation) == ("a", None, "delete")
        assert deleted.revision > put_revision
        await kv.purge("b")
        purged = await next_entry(watch)
        assert (purged.key, purged.value, purged.operation) == ("b", None, "purge")


async def test_watch_of_empty_bucket_reports_initial_done_then_delivers_changes(kv: KvStore) -> None:
    """On an empty bucket the initial snapshot is done at once, and the first put arrives as a change."""
    async with kv.watch() as watch:
        pending = asyncio.ensure_future(next_entry(watch))
        await asyncio.wait_for(watch.wait_initial_done(), timeout=TIMEOUT)
        assert not pending.done()
        await kv.put("first", 1)
        entry = await pending
        assert (entry.key, entry.value) == ("first", 1)


async def test_watch_initial_done_turns_true_after_the_last_initial_value(kv: KvStore) -> None:
    """initial_done stays False while initial values are being yielded and turns True when they are all out."""
    for i in range(3):
        await kv.put(f"k{i}", i)
    async with kv.watch() as watch:
        seen = []
        for _ in range(3):
            assert not watch.initial_done
            seen.append((await next_entry(watch)).key)
        pending = asyncio.ensure_future(next_entry(watch))
        await asyncio.wait_for(watch.wait_initial_done(), timeout=TIMEOUT)
        assert seen == ["k0", "k1", "k2"]
        pending.cancel()


async def test_watch_with_initial_false_delivers_only_new_changes(kv: KvStore) -> None:
    """watch(initial=False) skips existing values and yields writes made after it started."""
    await kv.put("old", 1)
    async with kv.watch(initial=False) as watch:
        await kv.put("new", 2)
        entry = await next_entry(watch)
        assert (entry.key, entry.value) == ("new", 2)


async def test_watch_with_history_replays_every_retained_revision(kv: KvStore) -> None:
    """watch(include_history=True) starts with all revisions, delete markers included."""
    await kv.put("k", 1)
    await kv.put("k", 2)
    await kv.delete("k")
    async with kv.watch("k", include_history=True) as watch:
        entries = [await next_entry(watch) for _ in range(3)]
    assert [(e.value, e.operation) for e in entries] == [(1, "put"), (2, "put"), (None, "delete")]


def test_watch_with_history_but_no_initial_is_a_configuration_error(kv: KvStore) -> None:
    """include_history=True with initial=False is contradictory and refused."""
    with pytest.raises(ConfigurationError):
        kv.watch(include_history=True, initial=False)


async def test_watch_filters_on_the_key_pattern(kv: KvStore) -> None:
    """A watch on `beings.*` sees only matching keys."""
    async with kv.watch("beings.*", initial=False) as watch:
        await kv.put("other", 1)
        await kv.put("beings.forge", 2)
        entry = await next_entry(watch)
    assert (entry.key, entry.value) == ("beings.forge", 2)


async def test_watch_skips_garbage_and_keeps_going(kv: KvStore, raw: Client) -> None:
    """An undecodable value is logged and skipped; the next good value still arrives."""
    raw_kv = await raw.jetstream().key_value("things")
    async with kv.watch(initial=False) as watch:
        with capture_logs() as logs:
            await raw_kv.put("bad", b"\x00garbage")
            await kv.put("good", "fine")
            entry = await next_entry(watch)
    assert (entry.key, entry.value) == ("good", "fine")
    undecodable = [e for e in logs if e["event"] == "kv.value_undecodable"]
    assert [(e["bucket"], e["key"]) for e in undecodable] == [("things", "bad")]


async def test_watch_sees_writes_from_another_client(kv: KvStore, raw: Client) -> None:
    """Puts and deletes made by a raw nats-py client arrive on the watch."""
    raw_kv = await raw.jetstream().key_value("things")
    async with kv.watch(initial=False) as watch:
        revision = await raw_kv.put("peer", b'{"n":1}')
        await raw_kv.delete("peer")
        put, deleted = await next_entry(watch), await next_entry(watch)
    assert (put.value, put.revision, put.operation) == ({"n": 1}, revision, "put")
    assert (deleted.operation, deleted.value) == ("delete", None)


async def test_aclose_ends_a_pending_iteration(kv: KvStore) -> None:
    """aclose() wakes a reader blocked on the next entry and iteration stops."""
    watch = await kv.watch().start()
    collected: list[KvEntry] = []

    async def consume() -> None:
        async for entry in watch:
            collected.append(entry)

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(watch.wait_initial_done(), timeout=TIMEOUT)
    await watch.aclose()
    await asyncio.wait_for(task, timeout=TIMEOUT)
    assert collected == []
    await watch.aclose()  # idempotent


async def test_async_for_starts_the_watch_lazily(kv: KvStore) -> None:
    """Iterating a watch that was never started starts it."""
    await kv.put("a", 1)
    watch = kv.watch()
    try:
        entry = await next_entry(watch)
    finally:
        await watch.aclose()
    assert (entry.key, entry.value) == ("a", 1)


async def test_watch_raises_not_connected_when_the_connection_closes(
    kv: KvStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader blocked on a watch whose connection closes gets NotConnectedError instead of hanging."""
    monkeypatch.setattr(_kv_watch, "_LIVENESS_CHECK_S", 0.02)
    async with kv.watch() as watch:
        pending = asyncio.ensure_future(next_entry(watch))
        await asyncio.wait_for(watch.wait_initial_done(), timeout=TIMEOUT)
        await kv.connection.close()
        with pytest.raises(NotConnectedError):
            await pending


async def test_watch_applies_back_pressure_without_losing_entries(kv: KvStore) -> None:
    """With a tiny buffer and more writes than fit, every entry still arrives in order."""
    async with kv.watch(initial=False, max_pending=2) as watch:
        revisions = [await kv.put(f"k{i}", i) for i in range(20)]
        entries = [await next_entry(watch) for _ in range(20)]
    assert [e.revision for e in entries] == revisions
    assert json.dumps([e.value for e in entries]) == json.dumps(list(range(20)))


async def test_scans_and_closed_watches_leave_no_consumers_behind(kv: KvStore) -> None:
    """keys(), get_all(), history() and a closed watch delete their ephemeral consumers."""
    await kv.put("a", 1)
    await kv.keys()
    await kv.get_all()
    await kv.history("a")
    async with kv.watch() as watch:
        await next_entry(watch)
        assert (await kv.connection.jetstream.stream_info("KV_things")).state.consumer_count == 1
    info = await kv.connection.jetstream.stream_info("KV_things")
    assert info.state.consumer_count == 0


async def test_watch_on_a_missing_bucket_raises_and_ends(kv: KvStore, raw: Client) -> None:
    """Starting a watch on a bucket deleted behind the store's back raises BucketNotFoundError; the watch is over."""
    await raw.jetstream().delete_key_value("things")
    watch = kv.watch()
    with pytest.raises(BucketNotFoundError, match="things"):
        await watch.start()
    with pytest.raises(StopAsyncIteration):
        await anext(watch)
    with pytest.raises(BucketNotFoundError):
        await kv.keys()


async def test_bucket_created_by_another_client_with_direct_get_is_used_as_is(
    shipkit_connection: ConnectionManager, raw: Client
) -> None:
    """A bucket a Rust agent created (allow_direct, like async-nats) is read through direct gets with the same rules."""
    raw_kv = await raw.jetstream().create_key_value(KeyValueConfig(bucket="rusty", history=5, direct=True))
    await raw_kv.put("value", b'{"n":1}')
    await raw_kv.put("gone", b"1")
    await raw_kv.delete("gone")
    await raw_kv.put("junk", b"{")
    store = await KvStore("rusty", shipkit_connection).connect()
    assert (await shipkit_connection.jetstream.stream_info("KV_rusty")).config.allow_direct
    entry = await store.get_entry("value")
    assert entry is not None
    assert (entry.value, entry.revision, entry.created is not None) == ({"n": 1}, 1, True)
    assert await store.get("gone") is None
    assert await store.get("never") is None
    with pytest.raises(SerializationError, match="rusty/junk"):
        await store.get("junk")
    await raw.jetstream().delete_key_value("rusty")
    with pytest.raises(BucketNotFoundError, match="rusty"):
        await store.get("value")
