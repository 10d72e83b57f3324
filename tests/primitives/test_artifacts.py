"""ArtifactStore against a real nats-server: description format, CRUD and seed interop."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta as RawObjectMeta

from shipkit.connection import ConnectionManager
from shipkit.errors import InvalidNameError, ObjectNotFoundError
from shipkit.primitives.artifacts import ArtifactStore, artifact_description


@pytest_asyncio.fixture
async def arts(shipkit_connection: ConnectionManager) -> AsyncIterator[ArtifactStore]:
    async with ArtifactStore(shipkit_connection) as opened:
        yield opened


async def raw_description(js: JetStreamContext, name: str) -> str:
    subject = f"$O.artifacts.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    msg = await js.get_last_msg("OBJ_artifacts", subject)
    assert msg.data is not None
    description: str = json.loads(msg.data)["description"]
    return description


async def test_description_with_expedition(arts: ArtifactStore, raw_js: JetStreamContext) -> None:
    """With an expedition the description is exactly 'type={type}, expedition={expedition}'."""
    meta = await arts.store_artifact("main.rs", b"fn main() {}", "code", expedition="exp-7")
    assert meta.description == "type=code, expedition=exp-7"
    assert await raw_description(raw_js, "main.rs") == "type=code, expedition=exp-7"


async def test_description_without_expedition(arts: ArtifactStore, raw_js: JetStreamContext) -> None:
    """Without an expedition the description is exactly 'type={type}'."""
    meta = await arts.store_artifact("build.log", b"ok\n", "log")
    assert meta.description == "type=log"
    assert await raw_description(raw_js, "build.log") == "type=log"


def test_artifact_description_format() -> None:
    """artifact_description renders both seed forms, an empty expedition included."""
    assert artifact_description("doc") == "type=doc"
    assert artifact_description("doc", "e1") == "type=doc, expedition=e1"
    assert artifact_description("doc", "") == "type=doc, expedition="


async def test_get_round_trips_and_missing_is_none(arts: ArtifactStore) -> None:
    """get returns the stored bytes; an unknown artifact is None."""
    await arts.store_artifact("notes.md", b"# notes\n", "doc")
    assert await arts.get("notes.md") == b"# notes\n"
    assert await arts.get("missing.md") is None


async def test_list_and_delete(arts: ArtifactStore) -> None:
    """list returns every artifact ([] when empty); delete removes one and a second delete raises."""
    assert await arts.list() == []
    await arts.store_artifact("a.txt", b"a", "doc")
    await arts.store_artifact("b.txt", b"bb", "log", expedition="e1")
    listed = {meta.name: meta for meta in await arts.list()}
    assert sorted(listed) == ["a.txt", "b.txt"]
    assert listed["b.txt"].description == "type=log, expedition=e1"
    await arts.delete("a.txt")
    assert [meta.name for meta in await arts.list()] == ["b.txt"]
    with pytest.raises(ObjectNotFoundError):
        await arts.delete("a.txt")


async def test_store_artifact_file_streams_a_file(arts: ArtifactStore, tmp_path: Path) -> None:
    """store_artifact_file stores a file's bytes with the artifact description."""
    source = tmp_path / "trace.log"
    source.write_bytes(b"line\n" * 50_000)
    meta = await arts.store_artifact_file("trace.log", source, "log", expedition="e2")
    assert (meta.size, meta.description) == (250_000, "type=log, expedition=e2")
    assert await arts.get("trace.log") == source.read_bytes()


async def test_reads_an_artifact_written_by_a_seed_agent(arts: ArtifactStore, raw_js: JetStreamContext) -> None:
    """An artifact a raw client stored with a seed description is listed and read back verified."""
    raw_store = await raw_js.object_store("artifacts")
    await raw_store.put("plan.md", b"# plan", meta=RawObjectMeta(description="type=doc, expedition=x"))
    assert await arts.get("plan.md") == b"# plan"
    assert [(m.name, m.description) for m in await arts.list()] == [("plan.md", "type=doc, expedition=x")]


async def test_raw_client_reads_a_shipkit_artifact(arts: ArtifactStore, raw_js: JetStreamContext) -> None:
    """A raw client reads the bytes and seed description of an artifact shipkit stored."""
    await arts.store_artifact("out.bin", b"\x00\x01\x02", "binary", expedition="e9")
    result = await (await raw_js.object_store("artifacts")).get("out.bin")
    assert result.data == b"\x00\x01\x02"
    assert result.info.description == "type=binary, expedition=e9"


async def test_invalid_names_are_refused(arts: ArtifactStore) -> None:
    """An empty artifact name raises InvalidNameError; so does a bad custom bucket."""
    with pytest.raises(InvalidNameError):
        await arts.store_artifact("", b"x", "doc")
    with pytest.raises(InvalidNameError):
        ArtifactStore(bucket="bad bucket")
