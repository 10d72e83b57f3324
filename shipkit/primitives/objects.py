"""Blobs in a standard NATS object bucket: :class:`ShipObjectStore` (wire contract §2, §3 "Object store").

The layout is the one every NATS client uses, so ``nats object get``, Go, Rust (noesis-ship) and
nats-py read what shipkit writes, and shipkit reads theirs:

- stream ``OBJ_{bucket}``; an object's bytes are chunks on ``$O.{bucket}.C.{nuid}``; its meta
  (JSON, ``name, description, metadata, options, bucket, nuid, size, mtime, chunks, digest``) is
  the last message on ``$O.{bucket}.M.{base64url(name)}`` (published with ``Nats-Rollup: sub``);
- ``digest`` is ``SHA-256=<base64url of the SHA-256 of the bytes>``. shipkit also writes the
  lowercase hex digest into the meta's ``metadata`` string map (``{"sha256": "<hex>"}``, the
  ADR-20 field Go, Rust and the CLI understand) and checks **both** on every read; a mismatch is a
  :class:`~shipkit.errors.ChecksumMismatchError`. Objects written by other clients (no ``sha256``
  entry) are checked against the NATS digest alone.

shipkit writes chunks and meta itself rather than through nats-py's ``ObjectStore`` because
nats-py drops the ``metadata`` map, writes an empty ``mtime`` on delete (which Rust readers
refuse) and assembles downloads by repeated ``bytes`` concatenation. Uploads are streamed chunk
by chunk (each chunk's ack awaited) and downloads from an ordered consumer, so neither side
ever holds a whole file in memory. The stored format itself (subjects, digests, meta, the
checks) is pure functions in :mod:`shipkit.primitives._object_format`. What is left (~440 lines)
stays together because uploads, downloads, listing and deletes share one stream's plumbing.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import AbstractContextManager, aclosing
from pathlib import Path
from typing import IO, Any

from nats.js import JetStreamContext, api
from nats.nuid import NUID

from shipkit._json import dumps
from shipkit._names import validate_bucket_name, validate_object_name
from shipkit.config import NatsConfig, ObjectStoreConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import (
    JS_ERR_NO_MESSAGE_FOUND,
    ConfigurationError,
    JetStreamError,
    NotConnectedError,
    ObjectNotFoundError,
    RevisionConflictError,
    SerializationError,
    ShipkitError,
)
from shipkit.logging import get_logger
from shipkit.models import ObjectMeta, utc_now_iso
from shipkit.primitives import _object_format as fmt
from shipkit.primitives._bucket import bucket_errors
from shipkit.primitives._object_format import SHA256_METADATA_KEY

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SHA256_METADATA_KEY",
    "ShipObjectStore",
]

log = get_logger(__name__)

DEFAULT_CHUNK_SIZE = 128 * 1024
"""Bytes per chunk message, the NATS clients' default."""


class ShipObjectStore(ConnectionOwner):
    """Bytes and files in a NATS object bucket, with SHA-256 checked on every read.

    ::

        async with ShipObjectStore("reports", "nats://localhost:4222") as store:
            meta = await store.put("q3.csv", b"a,b\\n1,2\\n", description="quarterly")
            assert await store.get("q3.csv") == b"a,b\\n1,2\\n"

    Args:
        config: the bucket (an :class:`ObjectStoreConfig`, or just its name).
        connection: a shared :class:`ConnectionManager` (not closed by :meth:`close`), or a
            :class:`NatsConfig` / URL / None for a connection this store owns.
        chunk_size_bytes: bytes per chunk message for uploads (must stay under the server's
            ``max_payload``).

    Raises:
        InvalidNameError: the bucket name is not ``[A-Za-z0-9_-]+``.
    """

    def __init__(
        self,
        config: ObjectStoreConfig | str,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if isinstance(config, str):
            config = ObjectStoreConfig(bucket=validate_bucket_name(config))
        if chunk_size_bytes <= 0:
            raise ConfigurationError(f"chunk_size_bytes must be positive, got {chunk_size_bytes}")
        super().__init__(connection)
        self.config = config
        self._chunk_size = chunk_size_bytes
        self._stream = f"OBJ_{config.bucket}"
        self._nuid = NUID()
        self._ready = False

    @property
    def bucket(self) -> str:
        """The bucket name (its stream is ``OBJ_{bucket}``)."""
        return self.config.bucket

    # -- lifecycle -------------------------------------------------------------------------

    async def _setup(self) -> None:
        await self.connection.ensure_object_store(self.config)
        self._ready = True

    async def _teardown(self) -> None:
        self._ready = False

    # -- writing ---------------------------------------------------------------------------

    async def put(self, name: str, data: bytes, description: str | None = None) -> ObjectMeta:
        """Store ``data`` under ``name``, replacing any object of that name.

        Raises:
            InvalidNameError: empty name or one with control characters.
            SerializationError: ``data`` is not bytes.
            BucketNotFoundError: the bucket was deleted after :meth:`connect`.
        """
        validate_object_name(name)
        payload = _as_bytes(data)
        return await self._write([name], _iter_bytes(payload, self._chunk_size), description, create_only=False)

    async def put_file(self, name: str, path: str | os.PathLike[str], description: str | None = None) -> ObjectMeta:
        """Stream the file at ``path`` into the object ``name``, chunk by chunk.

        The SHA-256 is computed while streaming; the file is never read whole into memory.

        Raises:
            OSError: the file cannot be opened or read (nothing is stored then).
        """
        validate_object_name(name)
        file = await asyncio.to_thread(Path(path).open, "rb")
        try:
            return await self._write([name], _iter_file(file, self._chunk_size), description, create_only=False)
        finally:
            await asyncio.to_thread(file.close)

    async def create(
        self, name: str, data: bytes, description: str | None = None, *, fallback_names: Iterable[str] = ()
    ) -> ObjectMeta:
        """Store ``data`` under ``name`` only if no object of that name was ever written.

        When ``name`` is taken, the next of ``fallback_names`` is tried, and so on; the check is
        done by the server (expected last subject sequence 0), so concurrent writers never
        overwrite each other. A deleted object's name counts as taken.

        Raises:
            RevisionConflictError: ``name`` and every fallback name are taken.
        """
        validate_object_name(name)
        payload = _as_bytes(data)
        names = [name, *(validate_object_name(fallback) for fallback in fallback_names)]
        return await self._write(names, _iter_bytes(payload, self._chunk_size), description, create_only=True)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, name: str) -> bytes | None:
        """The object's bytes, or None if there is no such object.

        Raises:
            ChecksumMismatchError: the bytes do not match the NATS digest or the stored sha256.
        """
        validate_object_name(name)
        meta = await self._read_meta(name)
        if meta is None:
            return None
        parts: list[bytes] = []
        async with aclosing(self._read_chunks(name, meta)) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return b"".join(parts)

    async def get_file(self, name: str, path: str | os.PathLike[str]) -> ObjectMeta | None:
        """Stream the object into the file at ``path``; None (and no file) if there is no such object.

        The bytes go to a temporary file next to ``path`` that replaces ``path`` only once the
        checksum is verified; on any failure it is removed and an existing ``path`` is untouched.

        Raises:
            ChecksumMismatchError: the bytes do not match their digest (no file is left behind).
        """
        validate_object_name(name)
        meta = await self._read_meta(name)
        if meta is None:
            return None
        target = Path(path)
        partial = target.with_name(f".{target.name}.{self._nuid.next().decode()}.part")
        file = await asyncio.to_thread(partial.open, "wb")
        try:
            async with aclosing(self._read_chunks(name, meta)) as chunks:
                async for chunk in chunks:
                    await asyncio.to_thread(file.write, chunk)
            await asyncio.to_thread(file.close)
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            file.close()
            partial.unlink(missing_ok=True)
            raise
        return fmt.to_object_meta(self.bucket, meta)

    async def info(self, name: str) -> ObjectMeta | None:
        """What the bucket records about ``name`` (no bytes are read), or None if absent."""
        validate_object_name(name)
        meta = await self._read_meta(name)
        return None if meta is None else fmt.to_object_meta(self.bucket, meta)

    async def list(self) -> list[ObjectMeta]:
        """Every live object in the bucket, in the order they were last written (``[]`` if none).

        A meta entry that cannot be decoded is logged (``object.meta_undecodable``) and skipped.
        """
        js = self._js()
        all_meta = f"$O.{self.bucket}.M.>"
        if await self._last_msg(all_meta, "object.list") is None:
            return []
        found: list[ObjectMeta] = []
        with self._translate(f"object.list {self.bucket}"):
            sub = await js.subscribe(
                all_meta,
                stream=self._stream,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            try:
                while True:
                    msg = await sub.next_msg(timeout=self._timeout_s)
                    meta = self._decode_listed(msg.subject, msg.data)
                    if meta is not None:
                        found.append(meta)
                    if msg.metadata.num_pending == 0:
                        break
            finally:
                await sub.unsubscribe()
        return found

    # -- deleting --------------------------------------------------------------------------

    async def delete(self, name: str) -> None:
        """Delete the object: a ``deleted`` meta marker is written and its chunks are purged.

        Raises:
            ObjectNotFoundError: there is no such object.
        """
        validate_object_name(name)
        meta = await self._read_meta(name)
        if meta is None:
            raise ObjectNotFoundError(f"object {self.bucket}/{name} does not exist")
        js = self._js()
        marker = fmt.deletion_marker(meta, utc_now_iso())
        with self._translate(f"object.delete {self.bucket}/{name}"):
            await js.publish(fmt.meta_subject(self.bucket, name), dumps(marker), headers=dict(fmt.ROLLUP_HEADERS))
            if meta.get("nuid"):
                await js.purge_stream(self._stream, subject=fmt.chunk_subject(self.bucket, str(meta["nuid"])))
        log.debug("object.deleted", bucket=self.bucket, name=name)

    # -- internals: writing ----------------------------------------------------------------

    async def _write(
        self, names: builtins.list[str], chunks: AsyncIterator[bytes], description: str | None, *, create_only: bool
    ) -> ObjectMeta:
        """Upload chunks under a fresh nuid, then publish the meta that makes them the object."""
        js = self._js()
        previous = None if create_only else await self._previous_meta(names[0])
        nuid = self._nuid.next().decode()
        chunk_subject = fmt.chunk_subject(self.bucket, nuid)
        try:
            size, count, sha256_hex = await self._publish_chunks(js, names[0], chunk_subject, chunks)
            info = fmt.new_meta(
                self.bucket,
                names[0],
                description=description,
                nuid=nuid,
                size=size,
                chunks=count,
                sha256_hex=sha256_hex,
                max_chunk_size=self._chunk_size,
                mtime=utc_now_iso(),
            )
            await self._publish_meta(js, info, names, create_only=create_only)
        except BaseException:  # cancelled too: chunks no meta points to are garbage
            await self._purge_abandoned(chunk_subject)
            raise
        if previous is not None and previous.get("nuid") and previous.get("nuid") != nuid:
            await self._purge_abandoned(fmt.chunk_subject(self.bucket, str(previous["nuid"])))
        log.debug("object.stored", bucket=self.bucket, name=info["name"], size_bytes=size, chunks=count)
        return fmt.to_object_meta(self.bucket, info)

    async def _previous_meta(self, name: str) -> dict[str, Any] | None:
        """The meta a put replaces (its chunks are purged afterwards); an unreadable one is replaced too."""
        try:
            return await self._read_meta(name)
        except SerializationError as exc:
            log.warning("object.meta_undecodable", bucket=self.bucket, name=name, reason=str(exc)[:200])
            return None

    async def _publish_chunks(
        self, js: JetStreamContext, name: str, subject: str, chunks: AsyncIterator[bytes]
    ) -> tuple[int, int, str]:
        """Publish every chunk, awaiting each ack; return size, chunk count and hex SHA-256.

        One ack at a time, as nats-py and async-nats do: nats-py's ``publish_async`` never
        resolves the future of a publish the server refuses (e.g. bucket full), so pipelining
        through it would turn errors into timeouts.
        """
        digest = hashlib.sha256()
        size = count = 0
        with self._translate(f"object.put {self.bucket}/{name}"):
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                count += 1
                await js.publish(subject, chunk)
        return size, count, digest.hexdigest()

    async def _publish_meta(
        self, js: JetStreamContext, info: dict[str, Any], names: builtins.list[str], *, create_only: bool
    ) -> None:
        """Publish the meta under the first name (or, create-only, the first name not taken)."""
        for name in names:
            info["name"] = name
            try:
                with self._translate(f"object.put {self.bucket}/{name}"):
                    await js.publish(
                        fmt.meta_subject(self.bucket, name),
                        dumps(info),
                        headers=dict(fmt.CREATE_ONLY_HEADERS if create_only else fmt.ROLLUP_HEADERS),
                    )
                return
            except RevisionConflictError:
                if not create_only:
                    raise
        raise RevisionConflictError(f"object.create {self.bucket}: every candidate name is taken ({', '.join(names)})")

    async def _purge_abandoned(self, chunk_subject: str) -> None:
        """Purge chunks no meta points to; a failure leaves garbage, not a broken object, so it is logged."""
        try:
            with self._translate(f"object.purge {self.bucket}"):
                await self._js().purge_stream(self._stream, subject=chunk_subject)
        except ShipkitError as exc:
            log.warning("object.purge_failed", bucket=self.bucket, subject=chunk_subject, error=str(exc))

    # -- internals: reading ----------------------------------------------------------------

    async def _read_meta(self, name: str) -> dict[str, Any] | None:
        """The object's meta as written (all fields kept), or None if absent or deleted."""
        msg = await self._last_msg(fmt.meta_subject(self.bucket, name), f"object.info {self.bucket}/{name}")
        if msg is None:
            return None
        meta = fmt.parse_meta(msg.data or b"", f"object meta {self.bucket}/{name}")
        meta.setdefault("name", name)
        return None if meta.get("deleted") else meta

    async def _last_msg(self, subject: str, what: str) -> api.RawStreamMsg | None:
        try:
            with self._translate(what):
                return await self._js().get_last_msg(self._stream, subject)
        except JetStreamError as exc:
            if exc.err_code == JS_ERR_NO_MESSAGE_FOUND:
                return None
            raise

    async def _read_chunks(self, name: str, meta: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Yield the object's chunks in order, then verify size and both digests."""
        if (meta.get("options") or {}).get("link"):
            raise ShipkitError(f"object {self.bucket}/{name} is a link; shipkit does not follow object links")
        digest = hashlib.sha256()
        received = 0
        if int(meta.get("chunks") or 0) > 0:
            js = self._js()
            with self._translate(f"object.get {self.bucket}/{name}"):
                sub = await js.subscribe(
                    fmt.chunk_subject(self.bucket, str(meta["nuid"])), stream=self._stream, ordered_consumer=True
                )
            try:
                while True:
                    with self._translate(f"object.get {self.bucket}/{name} (chunks stopped arriving)"):
                        msg = await sub.next_msg(timeout=self._timeout_s)
                    digest.update(msg.data)
                    received += len(msg.data)
                    yield msg.data
                    if msg.metadata.num_pending == 0:
                        break
            finally:
                with self._translate(f"object.get {self.bucket}/{name}"):
                    await sub.unsubscribe()
        fmt.verify(self.bucket, name, meta, digest.hexdigest(), received)

    def _decode_listed(self, subject: str, data: bytes) -> ObjectMeta | None:
        try:
            meta = fmt.parse_meta(data, f"object meta on {subject}")
            if not isinstance(meta.get("name"), str):
                raise SerializationError(f"object meta on {subject} has no name")
            return None if meta.get("deleted") else fmt.to_object_meta(self.bucket, meta)
        except (SerializationError, ValueError, TypeError) as exc:
            log.warning("object.meta_undecodable", bucket=self.bucket, subject=subject, reason=str(exc)[:200])
            return None

    # -- internals: plumbing ---------------------------------------------------------------

    def _js(self) -> JetStreamContext:
        if not self._ready:
            raise NotConnectedError(f"object store {self.bucket!r} is not connected: call `await connect()` first")
        return self.connection.jetstream

    @property
    def _timeout_s(self) -> float:
        return self.connection.config.request_timeout_s

    def _translate(self, what: str) -> AbstractContextManager[None]:
        """nats-py errors to shipkit errors; a missing ``OBJ_`` stream means a missing bucket."""
        return bucket_errors(what, "object", self.bucket, self._stream)


def _as_bytes(data: bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise SerializationError(f"object data must be bytes, got {type(data).__name__} (encode text first)")


async def _iter_bytes(data: bytes, chunk_size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


async def _iter_file(file: IO[bytes], chunk_size: int) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, chunk_size):
        yield chunk
