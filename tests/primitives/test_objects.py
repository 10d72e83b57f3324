"""ShipObjectStore against a real nats-server, including byte-level interop with a raw nats-py client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shipkit.config import NatsConfig, ObjectStoreConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    BucketNotFoundError,
    ChecksumMismatchError,
    InvalidNameError,
    JetStreamError,
    NotConnectedError,
    ObjectNotFoundError,
    RevisionConflictError,
    SerializationError,
)
from shipkit.models import parse_timestamp
from shipkit.primitives._object_format import hex_to_digest
from shipkit.primitives.objects import DEFAULT_CHUNK_SIZE, ShipObjectStore

BUCKET = "files"
THREE_MIB = 3 * 1024 * 1024


@pytest_asyncio.fixture
async def store(shipkit_connection: ConnectionManager) -> AsyncIterator[ShipObjectStore]:
    async with ShipObjectStore(BUCKET, shipkit_connection) as opened:
        yield opened


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_subject(name: str, bucket: str = BUCKET) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


async def raw_meta(js: JetStreamContext, name: str) -> dict[str, Any]:
    msg = await js.get_last_msg(f"OBJ_{BUCKET}", meta_subject(name))
    assert msg.data is not None
    meta: dict[str, Any] = json.loads(msg.data)
    return meta


async def republish_meta(js: JetStreamContext, name: str, meta: dict[str, Any]) -> None:
    await js.publish(meta_subject(name), json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})


# -- put / get / info / list / delete -------------------------------------------------------


async def test_put_returns_meta_with_hex_sha256_and_utc_created(store: ShipObjectStore) -> None:
    """put reports name, bucket, size, lowercase hex SHA-256 of the bytes, RFC 3339 UTC created and description."""
    meta = await store.put("report.csv", b"a,b\n1,2\n", description="quarterly")
    assert (meta.name, meta.bucket, meta.size, meta.description) == ("report.csv", BUCKET, 8, "quarterly")
    assert meta.sha256 == sha256_hex(b"a,b\n1,2\n")
    assert meta.created.endswith("+00:00")
    assert parse_timestamp(meta.created).utcoffset() is not None


async def test_get_returns_the_bytes_put(store: ShipObjectStore) -> None:
    """get returns exactly the bytes stored, including an empty object."""
    await store.put("blob", b"\x00\x01binary\xff")
    await store.put("empty", b"")
    assert await store.get("blob") == b"\x00\x01binary\xff"
    assert await store.get("empty") == b""


async def test_missing_object_reads_as_none(store: ShipObjectStore, tmp_path: Path) -> None:
    """get, info and get_file of a missing object return None; get_file creates no file."""
    target = tmp_path / "never.bin"
    assert await store.get("nope") is None
    assert await store.info("nope") is None
    assert await store.get_file("nope", target) is None
    assert os.listdir(tmp_path) == []


async def test_info_describes_without_reading_bytes(store: ShipObjectStore) -> None:
    """info returns the same ObjectMeta that put returned."""
    put_meta = await store.put("doc.md", b"# title\n", description="docs")
    assert await store.info("doc.md") == put_meta


async def test_put_replaces_and_purges_the_old_chunks(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """A second put under the same name serves the new bytes and removes the old chunks from the stream."""
    await store.put("cfg", b"version 1")
    old_nuid = (await raw_meta(raw_js, "cfg"))["nuid"]
    await store.put("cfg", b"version 2")
    assert await store.get("cfg") == b"version 2"
    with pytest.raises(NotFoundError):
        await raw_js.get_last_msg(f"OBJ_{BUCKET}", f"$O.{BUCKET}.C.{old_nuid}")


async def test_list_is_empty_then_lists_live_objects(store: ShipObjectStore) -> None:
    """list returns [] for an empty bucket and every live object (deleted ones excluded) otherwise."""
    assert await store.list() == []
    await store.put("one", b"1")
    await store.put("two", b"22", description="second")
    await store.put("three", b"333")
    await store.delete("three")
    listed = {meta.name: meta for meta in await store.list()}
    assert sorted(listed) == ["one", "two"]
    assert listed["two"].size == 2
    assert listed["two"].description == "second"
    assert listed["two"].sha256 == sha256_hex(b"22")


async def test_delete_removes_object_and_chunks(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """delete makes the object unreadable and purges its chunks."""
    await store.put("gone", b"bytes")
    nuid = (await raw_meta(raw_js, "gone"))["nuid"]
    await store.delete("gone")
    assert await store.get("gone") is None
    with pytest.raises(NotFoundError):
        await raw_js.get_last_msg(f"OBJ_{BUCKET}", f"$O.{BUCKET}.C.{nuid}")


async def test_delete_of_missing_object_raises(store: ShipObjectStore) -> None:
    """Deleting an object that does not exist raises ObjectNotFoundError."""
    with pytest.raises(ObjectNotFoundError):
        await store.delete("never-there")


async def test_delete_marker_keeps_a_valid_mtime(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """The deleted marker carries an RFC 3339 mtime (Rust readers reject nats-py's empty string)."""
    await store.put("tmp", b"x")
    await store.delete("tmp")
    marker = await raw_meta(raw_js, "tmp")
    assert marker["deleted"] is True
    assert (marker["size"], marker["chunks"]) == (0, 0)
    parse_timestamp(marker["mtime"])


async def test_create_never_overwrites(store: ShipObjectStore) -> None:
    """create stores under the first free name and raises when every candidate is taken."""
    first = await store.create("snap", b"a", fallback_names=["snap_2", "snap_3"])
    second = await store.create("snap", b"b", fallback_names=["snap_2", "snap_3"])
    assert (first.name, second.name) == ("snap", "snap_2")
    assert await store.get("snap") == b"a"
    with pytest.raises(RevisionConflictError):
        await store.create("snap", b"c", fallback_names=["snap_2"])
    assert await store.get("snap_2") == b"b"


async def test_object_names_may_hold_dots_slashes_and_unicode(store: ShipObjectStore) -> None:
    """Names are base64url-encoded on the wire, so dots, slashes, spaces and non-ASCII work."""
    for name in ("logs/2024/run.1.txt", "with space", "naïve-名前"):
        await store.put(name, name.encode())
        assert await store.get(name) == name.encode()


@pytest.mark.parametrize("name", ["", "bad\nname", "tab\there", "nul\x00"])
async def test_invalid_object_names_are_refused(store: ShipObjectStore, name: str) -> None:
    """Empty names and names with control characters raise InvalidNameError before anything is sent."""
    with pytest.raises(InvalidNameError):
        await store.put(name, b"x")
    with pytest.raises(InvalidNameError):
        await store.get(name)


@pytest.mark.parametrize("bucket", ["", "has space", "dot.ted", "star*", "a>b"])
def test_invalid_bucket_names_are_refused(bucket: str) -> None:
    """A bucket name outside [A-Za-z0-9_-]+ raises InvalidNameError at construction."""
    with pytest.raises(InvalidNameError):
        ShipObjectStore(bucket)


async def test_non_bytes_data_is_refused(store: ShipObjectStore) -> None:
    """put of a str raises SerializationError instead of guessing an encoding."""
    with pytest.raises(SerializationError):
        await store.put("text", "not bytes")  # type: ignore[arg-type]


async def test_methods_before_connect_raise_not_connected(shipkit_connection: ConnectionManager) -> None:
    """Every operation before connect() raises NotConnectedError."""
    store = ShipObjectStore(BUCKET, shipkit_connection)
    with pytest.raises(NotConnectedError):
        await store.put("a", b"x")
    with pytest.raises(NotConnectedError):
        await store.get("a")
    with pytest.raises(NotConnectedError):
        await store.list()


async def test_missing_bucket_raises_bucket_not_found(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """When the bucket is deleted under a connected store, reads and writes raise BucketNotFoundError."""
    await raw_js.delete_object_store(BUCKET)
    with pytest.raises(BucketNotFoundError):
        await store.get("anything")
    with pytest.raises(BucketNotFoundError):
        await store.put("anything", b"x")


async def test_refused_upload_raises_and_leaves_no_chunks(
    shipkit_connection: ConnectionManager, raw_js: JetStreamContext
) -> None:
    """A put the server refuses (bucket over max_bytes) raises JetStreamError at once and purges its chunks."""
    config = ObjectStoreConfig(bucket="tiny", max_bytes=300_000)
    async with ShipObjectStore(config, shipkit_connection) as tiny:
        with pytest.raises(JetStreamError) as caught:
            await tiny.put("too-big", os.urandom(1_000_000))
        assert caught.value.err_code == 10077
        assert await tiny.info("too-big") is None
    state = (await raw_js.stream_info("OBJ_tiny")).state
    assert (state.messages, state.bytes) == (0, 0)


async def test_close_leaves_a_shared_connection_open(shipkit_connection: ConnectionManager) -> None:
    """close() does not disconnect a manager the store was given."""
    async with ShipObjectStore(ObjectStoreConfig(bucket=BUCKET), shipkit_connection) as store:
        await store.put("a", b"x")
    assert shipkit_connection.is_connected


async def test_owned_connection_is_closed(shipkit_config: NatsConfig) -> None:
    """A store built from a NatsConfig owns its connection and closes it."""
    store = ShipObjectStore(BUCKET, shipkit_config)
    async with store:
        await store.put("a", b"x")
        assert store.connection.is_connected
    assert not store.connection.is_connected


# -- interop with a raw NATS client -----------------------------------------------------------


async def test_raw_client_reads_what_shipkit_wrote(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """A raw nats-py client reads shipkit's bytes; the meta holds the standard digest and our hex sha256."""
    data = b"payload for another client" * 100
    await store.put("shared.bin", data, description="interop")
    raw_store = await raw_js.object_store(BUCKET)
    result = await raw_store.get("shared.bin")
    assert result.data == data
    meta = await raw_meta(raw_js, "shared.bin")
    assert meta["metadata"] == {"sha256": sha256_hex(data)}
    assert meta["digest"] == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    assert (meta["name"], meta["bucket"], meta["size"], meta["description"]) == (
        "shared.bin",
        BUCKET,
        len(data),
        "interop",
    )
    assert meta["chunks"] == 1
    parse_timestamp(meta["mtime"])


async def test_shipkit_reads_what_a_raw_client_wrote(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """An object written by nats-py (no sha256 metadata) reads fine, verified and reported via the NATS digest."""
    data = os.urandom(300_000)
    raw_store = await raw_js.object_store(BUCKET)
    await raw_store.put("foreign.bin", data)
    assert await store.get("foreign.bin") == data
    info = await store.info("foreign.bin")
    assert info is not None
    assert (info.size, info.sha256) == (len(data), sha256_hex(data))
    assert [meta.name for meta in await store.list()] == ["foreign.bin"]


async def test_stale_sha256_metadata_is_a_checksum_mismatch(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """New bytes written under a name whose sha256 metadata is stale fail verification on get."""
    raw_store = await raw_js.object_store(BUCKET)
    await raw_store.put("tampered", b"the new bytes")
    meta = await raw_meta(raw_js, "tampered")
    meta["metadata"] = {"sha256": sha256_hex(b"the old bytes")}
    await republish_meta(raw_js, "tampered", meta)
    with pytest.raises(ChecksumMismatchError):
        await store.get("tampered")


async def test_bytes_not_matching_either_digest_are_a_checksum_mismatch(
    store: ShipObjectStore, raw_js: JetStreamContext
) -> None:
    """When the meta's digests describe other bytes than the chunks hold, get raises ChecksumMismatchError."""
    await store.put("swapped", b"original bytes")
    meta = await raw_meta(raw_js, "swapped")
    meta["digest"] = hex_to_digest(sha256_hex(b"forged bytes!!"))
    meta["metadata"] = {"sha256": sha256_hex(b"forged bytes!!")}
    await republish_meta(raw_js, "swapped", meta)
    with pytest.raises(ChecksumMismatchError):
        await store.get("swapped")


async def test_get_file_on_mismatch_leaves_no_file(
    store: ShipObjectStore, raw_js: JetStreamContext, tmp_path: Path
) -> None:
    """get_file of a corrupt object raises and leaves neither the target nor a partial file behind."""
    await store.put("bad", b"some bytes")
    meta = await raw_meta(raw_js, "bad")
    meta["metadata"] = {"sha256": sha256_hex(b"other")}
    await republish_meta(raw_js, "bad", meta)
    with pytest.raises(ChecksumMismatchError):
        await store.get_file("bad", tmp_path / "out.bin")
    assert os.listdir(tmp_path) == []


async def test_undecodable_meta_is_skipped_by_list(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """A garbage meta message in the bucket is logged and skipped; list still returns the good objects."""
    await store.put("good", b"ok")
    await raw_js.publish(meta_subject("garbage"), b"{not json", headers={"Nats-Rollup": "sub"})
    assert [meta.name for meta in await store.list()] == ["good"]


async def test_put_overwrites_an_undecodable_meta(store: ShipObjectStore, raw_js: JetStreamContext) -> None:
    """A name whose meta is garbage raises SerializationError on get, and a put repairs it."""
    await raw_js.publish(meta_subject("broken"), b"{not json", headers={"Nats-Rollup": "sub"})
    with pytest.raises(SerializationError):
        await store.get("broken")
    await store.put("broken", b"fixed")
    assert await store.get("broken") == b"fixed"


# -- streaming files --------------------------------------------------------------------------


async def test_put_file_streams_without_loading_the_file(store: ShipObjectStore, tmp_path: Path) -> None:
    """put_file of a 3 MiB file stays far below the file size in peak memory and splits it into 128 KiB chunks."""
    source = tmp_path / "big.bin"
    data = os.urandom(THREE_MIB + 7)
    source.write_bytes(data)
    await store.put("warm-up", b"x")  # the first JetStream publish sets up its reply subscription
    tracemalloc.start()
    try:
        meta = await store.put_file("big.bin", source, description="big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < THREE_MIB // 2, f"peak {peak} bytes: the file was not streamed"
    assert (meta.size, meta.sha256, meta.description) == (len(data), sha256_hex(data), "big")
    assert await store.get("big.bin") == data


async def test_get_file_streams_chunk_by_chunk(
    store: ShipObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_file writes the object to disk one chunk at a time and returns its meta."""
    data = os.urandom(THREE_MIB)
    await store.put("big.bin", data)
    writes: list[int] = []
    real_open = Path.open

    class SpyFile:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def write(self, chunk: bytes) -> int:
            writes.append(len(chunk))
            return int(self._inner.write(chunk))

        def close(self) -> None:
            self._inner.close()

    def spy_open(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, mode, *args, **kwargs)
        return SpyFile(handle) if "w" in mode else handle

    monkeypatch.setattr(Path, "open", spy_open)
    meta = await store.get_file("big.bin", tmp_path / "copy.bin")
    monkeypatch.undo()
    assert meta is not None
    assert meta.sha256 == sha256_hex(data)
    assert len(writes) == THREE_MIB // DEFAULT_CHUNK_SIZE
    assert max(writes) == DEFAULT_CHUNK_SIZE
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert os.listdir(tmp_path) == ["copy.bin"]


async def test_get_file_replaces_an_existing_file(store: ShipObjectStore, tmp_path: Path) -> None:
    """get_file overwrites an existing target with the verified object."""
    target = tmp_path / "out.txt"
    target.write_bytes(b"stale content that is longer")
    await store.put("fresh", b"fresh")
    await store.get_file("fresh", target)
    assert target.read_bytes() == b"fresh"


async def test_put_file_of_missing_path_stores_nothing(store: ShipObjectStore, tmp_path: Path) -> None:
    """put_file of a file that does not exist raises OSError and stores no object."""
    with pytest.raises(FileNotFoundError):
        await store.put_file("ghost", tmp_path / "missing.bin")
    assert await store.info("ghost") is None
