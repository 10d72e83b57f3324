"""The stored format of a NATS object (wire contract §2, §3 "Object store"): pure functions, no I/O.

An object's bytes are chunks on ``$O.{bucket}.C.{nuid}``; its meta (JSON, ``name, description,
metadata, options, bucket, nuid, size, mtime, chunks, digest``) is the last message on
``$O.{bucket}.M.{base64url(name)}``. ``digest`` is ``SHA-256=<base64url of the SHA-256>``;
shipkit also writes the lowercase hex into ``metadata`` (``{"sha256": "<hex>"}``, the ADR-20
field) and :func:`verify` checks both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final

from shipkit._json import loads
from shipkit.errors import ChecksumMismatchError, SerializationError
from shipkit.models import ObjectMeta

__all__ = [
    "CREATE_ONLY_HEADERS",
    "ROLLUP_HEADERS",
    "SHA256_METADATA_KEY",
    "chunk_subject",
    "deletion_marker",
    "digest_to_hex",
    "hex_to_digest",
    "meta_subject",
    "new_meta",
    "parse_meta",
    "stored_sha256",
    "to_object_meta",
    "verify",
]

SHA256_METADATA_KEY: Final = "sha256"
"""Key of the hex digest in the object meta's ``metadata`` map."""

ROLLUP_HEADERS: Final = {"Nats-Rollup": "sub"}
"""Headers of a meta publish: the new meta replaces every earlier one of the name."""

CREATE_ONLY_HEADERS: Final = {"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": "0"}
"""Headers of a create-only meta publish: the server refuses it when the name was ever written."""

_DIGEST_PREFIX: Final = "SHA-256="


def meta_subject(bucket: str, name: str) -> str:
    """The subject holding the meta of object ``name``: ``$O.{bucket}.M.{base64url(name)}``."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def chunk_subject(bucket: str, nuid: str) -> str:
    """The subject holding the chunks of the object version ``nuid``: ``$O.{bucket}.C.{nuid}``."""
    return f"$O.{bucket}.C.{nuid}"


def digest_to_hex(digest: str | None) -> str | None:
    """The lowercase hex of a NATS ``SHA-256=<base64url>`` digest; None when there is none.

    Raises:
        SerializationError: the digest is present but not a readable SHA-256.
    """
    if not digest:
        return None
    if not digest.upper().startswith(_DIGEST_PREFIX):
        raise SerializationError(f"object digest {digest!r} is not SHA-256")
    encoded = digest[len(_DIGEST_PREFIX) :].strip().replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SerializationError(f"object digest {digest!r} is not valid base64") from exc
    if len(raw) != hashlib.sha256().digest_size:
        raise SerializationError(f"object digest {digest!r} is not 32 bytes long")
    return raw.hex()


def hex_to_digest(sha256_hex: str) -> str:
    """The NATS digest form (``SHA-256=<base64url>``) of a hex SHA-256."""
    return _DIGEST_PREFIX + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode()


def new_meta(
    bucket: str,
    name: str,
    *,
    description: str | None,
    nuid: str,
    size: int,
    chunks: int,
    sha256_hex: str,
    max_chunk_size: int,
    mtime: str,
) -> dict[str, Any]:
    """The meta of a freshly written object, fields in the order the NATS clients write them."""
    meta: dict[str, Any] = {"name": name}
    if description is not None:
        meta["description"] = description
    meta["metadata"] = {SHA256_METADATA_KEY: sha256_hex}
    meta["options"] = {"max_chunk_size": max_chunk_size}
    meta.update(bucket=bucket, nuid=nuid, size=size, mtime=mtime, chunks=chunks, digest=hex_to_digest(sha256_hex))
    return meta


def deletion_marker(meta: dict[str, Any], mtime: str) -> dict[str, Any]:
    """The meta that marks ``meta``'s object deleted: no size, chunks or digest, a real ``mtime``.

    nats-py writes an empty ``mtime`` here, which Rust readers refuse; this one is a timestamp.
    """
    marker = {**meta, "size": 0, "chunks": 0, "mtime": mtime, "deleted": True}
    marker.pop("digest", None)
    return marker


def parse_meta(data: bytes, what: str) -> dict[str, Any]:
    """Decode a meta message body.

    Raises:
        SerializationError: the body is not a JSON object (``what`` names it in the message).
    """
    meta = loads(data, what)
    if not isinstance(meta, dict):
        raise SerializationError(f"{what} is not a JSON object")
    return meta


def stored_sha256(meta: dict[str, Any]) -> str | None:
    """The lowercase hex SHA-256 in the meta's ``metadata`` map; None when it has none."""
    metadata = meta.get("metadata")
    value = metadata.get(SHA256_METADATA_KEY) if isinstance(metadata, dict) else None
    return value.lower() if isinstance(value, str) and value else None


def verify(bucket: str, name: str, meta: dict[str, Any], actual_hex: str, received: int) -> None:
    """Check what was read against the meta: the size, the NATS digest and the stored sha256.

    Raises:
        ChecksumMismatchError: any of them differs; the message lists every difference.
    """
    problems = []
    if received != int(meta.get("size") or 0):
        problems.append(f"{received} bytes arrived but the meta says {meta.get('size')}")
    nats_hex = digest_to_hex(meta.get("digest"))
    if nats_hex is not None and nats_hex != actual_hex:
        problems.append(f"the NATS digest is {nats_hex}")
    stored = stored_sha256(meta)
    if stored is not None and stored != actual_hex:
        problems.append(f"the stored sha256 is {stored}")
    if problems:
        raise ChecksumMismatchError(
            f"object {bucket}/{name} is corrupt: its bytes hash to {actual_hex}, but {'; '.join(problems)}"
        )


def to_object_meta(bucket: str, meta: dict[str, Any]) -> ObjectMeta:
    """The :class:`~shipkit.models.ObjectMeta` users see for a stored meta."""
    description = meta.get("description")
    return ObjectMeta(
        name=str(meta["name"]),
        bucket=bucket,
        size=int(meta.get("size") or 0),
        sha256=digest_to_hex(meta.get("digest")) or stored_sha256(meta) or "",
        created=str(meta.get("mtime") or ""),
        description=description if isinstance(description, str) else None,
    )
