"""The object store's stored format (subjects, digests, meta, verification), checked without a server."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from shipkit.errors import ChecksumMismatchError, SerializationError
from shipkit.primitives._object_format import (
    CREATE_ONLY_HEADERS,
    ROLLUP_HEADERS,
    chunk_subject,
    deletion_marker,
    digest_to_hex,
    hex_to_digest,
    meta_subject,
    new_meta,
    parse_meta,
    stored_sha256,
    to_object_meta,
    verify,
)

DATA = b"a,b\n1,2\n"
HEX = hashlib.sha256(DATA).hexdigest()


def meta_for(data: bytes = DATA, **changes: object) -> dict[str, object]:
    meta = new_meta(
        "reports",
        "q3.csv",
        description="quarterly",
        nuid="NUID1",
        size=len(data),
        chunks=1,
        sha256_hex=hashlib.sha256(data).hexdigest(),
        max_chunk_size=131072,
        mtime="2026-01-02T03:04:05Z",
    )
    meta.update(changes)
    return meta


def test_digest_conversions_round_trip() -> None:
    """hex_to_digest and digest_to_hex invert each other; unpadded and standard-alphabet digests are read too."""
    digest = hex_to_digest(HEX)
    assert digest.startswith("SHA-256=")
    assert digest_to_hex(digest) == HEX
    raw = hashlib.sha256(DATA).digest()
    assert digest_to_hex("SHA-256=" + base64.b64encode(raw).decode().rstrip("=")) == HEX
    assert digest_to_hex(None) is None
    assert digest_to_hex("") is None


@pytest.mark.parametrize("digest", ["MD5=abc", "SHA-256=dG9vIHNob3J0", "SHA-256=!!not base64!!"])
def test_unreadable_digest_raises(digest: str) -> None:
    """A digest that is not a 32-byte base64 SHA-256 raises SerializationError."""
    with pytest.raises(SerializationError):
        digest_to_hex(digest)


def test_subjects_follow_the_nats_layout() -> None:
    """Meta lives on $O.{bucket}.M.{base64url(name)}, chunks on $O.{bucket}.C.{nuid}."""
    assert (
        meta_subject("reports", "q3/é.csv") == "$O.reports.M." + base64.urlsafe_b64encode("q3/é.csv".encode()).decode()
    )
    assert chunk_subject("reports", "NUID1") == "$O.reports.C.NUID1"


def test_publish_headers() -> None:
    """Every meta publish rolls up the subject; a create-only one also expects no earlier message."""
    assert ROLLUP_HEADERS == {"Nats-Rollup": "sub"}
    assert CREATE_ONLY_HEADERS == {"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": "0"}


def test_new_meta_has_the_clients_fields_in_order() -> None:
    """A new meta carries both digests and the fields in the order the NATS clients write them."""
    meta = meta_for()
    assert list(meta) == [
        "name",
        "description",
        "metadata",
        "options",
        "bucket",
        "nuid",
        "size",
        "mtime",
        "chunks",
        "digest",
    ]
    assert meta["metadata"] == {"sha256": HEX}
    assert digest_to_hex(str(meta["digest"])) == HEX
    assert "description" not in new_meta(
        "b", "n", description=None, nuid="x", size=0, chunks=0, sha256_hex=HEX, max_chunk_size=1, mtime="t"
    )


def test_deletion_marker_keeps_a_real_mtime_and_drops_the_digest() -> None:
    """The delete marker has no size, chunks or digest, and the given mtime (never empty, which Rust refuses)."""
    marker = deletion_marker(meta_for(), "2026-02-03T00:00:00Z")
    assert marker["deleted"] is True
    assert (marker["size"], marker["chunks"], marker["mtime"]) == (0, 0, "2026-02-03T00:00:00Z")
    assert "digest" not in marker
    assert marker["nuid"] == "NUID1"


def test_parse_meta_refuses_what_is_not_a_json_object() -> None:
    """A meta body must be a JSON object; anything else raises SerializationError naming it."""
    assert parse_meta(json.dumps({"name": "x"}).encode(), "meta x") == {"name": "x"}
    with pytest.raises(SerializationError, match="meta x"):
        parse_meta(b"[1, 2]", "meta x")
    with pytest.raises(SerializationError):
        parse_meta(b"{not json", "meta x")


def test_stored_sha256_is_lowercased_and_optional() -> None:
    """The metadata map's sha256 is read in lowercase; a meta from another client may have none."""
    assert stored_sha256({"metadata": {"sha256": HEX.upper()}}) == HEX
    assert stored_sha256({"metadata": None}) is None
    assert stored_sha256({}) is None


def test_verify_accepts_matching_bytes() -> None:
    """Bytes matching size and both digests pass; a foreign meta without sha256 is checked on its digest."""
    verify("reports", "q3.csv", meta_for(), HEX, len(DATA))
    verify("reports", "q3.csv", meta_for(metadata={}), HEX, len(DATA))


def test_verify_lists_every_difference() -> None:
    """A size, NATS-digest or sha256 mismatch raises ChecksumMismatchError naming each problem."""
    forged = hashlib.sha256(b"forged").hexdigest()
    meta = meta_for(digest=hex_to_digest(forged), metadata={"sha256": forged})
    with pytest.raises(ChecksumMismatchError) as caught:
        verify("reports", "q3.csv", meta, HEX, len(DATA) + 1)
    message = str(caught.value)
    assert "reports/q3.csv is corrupt" in message
    assert "bytes arrived" in message
    assert "NATS digest" in message
    assert "stored sha256" in message


def test_to_object_meta_reads_what_users_see() -> None:
    """ObjectMeta takes the digest's hex (or the stored sha256), the mtime as created, and a text description."""
    meta = to_object_meta("reports", meta_for())
    assert (meta.name, meta.bucket, meta.size, meta.sha256) == ("q3.csv", "reports", len(DATA), HEX)
    assert (meta.created, meta.description) == ("2026-01-02T03:04:05Z", "quarterly")
    foreign = to_object_meta("reports", {"name": "x", "metadata": {"sha256": HEX}, "description": 7})
    assert (foreign.sha256, foreign.size, foreign.created, foreign.description) == (HEX, 0, "", None)
