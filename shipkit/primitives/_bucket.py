"""What the bucket primitives share: :class:`BucketOwner` and the translation of a missing bucket.

A KV bucket and an object bucket are both one JetStream stream (``KV_{bucket}``,
``OBJ_{bucket}``); a missing stream there means a missing bucket, and a ``get`` of a subject
without messages answers with JetStream error :data:`shipkit.errors.JS_ERR_NO_MESSAGE_FOUND`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, Self, TypeVar

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import BucketNotFoundError, StreamNotFoundError, translate_nats_errors

__all__ = ["BucketOwner", "BucketStore", "bucket_errors"]

"""JetStream API error code of a message ``get`` that finds nothing on the subject."""


@contextlib.contextmanager
def bucket_errors(what: str, kind: str, bucket: str, stream: str) -> Iterator[None]:
    """Translate nats-py errors to shipkit errors; a missing ``stream`` becomes :class:`BucketNotFoundError`.

    Args:
        what: the operation, for the message (``kv get hits in``).
        kind: ``KV`` or ``object``.
        bucket: the bucket name.
        stream: the stream behind the bucket.
    """
    try:
        with translate_nats_errors(what):
            yield
    except StreamNotFoundError as exc:
        raise BucketNotFoundError(
            f"{what}: {kind} bucket {bucket!r} does not exist (no stream {stream})",
            err_code=exc.err_code,
            status=exc.status,
        ) from exc


class BucketStore(Protocol):
    """What :class:`BucketOwner` needs of its store (:class:`KvStore`, :class:`ShipObjectStore`)."""

    @property
    def bucket(self) -> str:
        """The bucket name."""
        ...

    async def connect(self) -> Self:
        """Open (and provision) the bucket."""
        ...

    async def close(self) -> None:
        """Forget the bucket."""
        ...


StoreT = TypeVar("StoreT", bound=BucketStore)


class BucketOwner(ConnectionOwner, Generic[StoreT]):
    """Base of the primitives that keep their state in one bucket (registry, config, snapshots ...).

    The underlying store is :attr:`store`, built over :attr:`connection` (so only this object
    decides whether the connection is closed): :meth:`connect` opens the bucket, :meth:`close`
    forgets it and then closes an owned connection.

    Args:
        connection: a shared :class:`ConnectionManager`, or a config / URL / ``None`` for an
            owned connection.
        store: builds the store over the resolved connection.
    """

    def __init__(
        self,
        connection: ConnectionManager | NatsConfig | str | None,
        store: Callable[[ConnectionManager], StoreT],
    ) -> None:
        super().__init__(connection)
        self.store: StoreT = store(self.connection)

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.store.bucket

    async def _setup(self) -> None:
        await self.store.connect()

    async def _teardown(self) -> None:
        await self.store.close()
