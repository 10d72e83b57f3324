"""The shared stores a running service hands its handlers: :class:`ServiceResources`.

One event bus, one :class:`~shipkit.primitives.kv.KvStore` per bucket, one
:class:`~shipkit.primitives.objects.ShipObjectStore` per bucket and one
:class:`~shipkit.jobs.JobQueue` per queue name, each made and connected on first use over the
service's connection and kept for the life of the runtime (which closes the job queues at
shutdown, so their last events and counts are flushed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from shipkit._connectable import Connectable
from shipkit.config import KvBucketConfig, ObjectStoreConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.jobs import JobQueue
from shipkit.models import ShipEvent
from shipkit.primitives.eventbus import EventBus
from shipkit.primitives.kv import KvStore
from shipkit.primitives.objects import ShipObjectStore

__all__ = ["ServiceResources"]

StoreT = TypeVar("StoreT", bound=Connectable)


class ServiceResources:
    """Stores made on first use and cached by name.

    Args:
        connection: the service's connection manager.
        source: the service name (the ``source`` of its events and job events).
        event_stream / event_prefix: where the service's events go.
    """

    def __init__(
        self, connection: ConnectionManager, *, source: str, event_stream: StreamConfig, event_prefix: str
    ) -> None:
        self._connection = connection
        self._source = source
        self._event_stream = event_stream
        self._event_prefix = event_prefix
        self._bus: EventBus | None = None
        self._kv: dict[str, KvStore] = {}
        self._objects: dict[str, ShipObjectStore] = {}
        self._job_queues: dict[str, JobQueue[Any]] = {}
        # One store per name even when two handlers ask for a new one at once (the second waits).
        self._making = asyncio.Lock()

    async def event_bus(self) -> EventBus:
        """The service's event bus (created on first use)."""
        if self._bus is None:
            async with self._making:
                if self._bus is None:
                    bus = EventBus(
                        self._connection, stream=self._event_stream, prefix=self._event_prefix, source=self._source
                    )
                    await bus.connect()
                    self._bus = bus
        return self._bus

    async def emit(self, event_type: str, payload: Any = None, *, correlation_id: str | None = None) -> ShipEvent:
        """Publish a ``ShipEvent`` to ``{event_prefix}.{event_type}`` and await the JetStream ack."""
        bus = await self.event_bus()
        return await bus.emit(event_type, payload, correlation_id=correlation_id)

    async def kv(self, bucket: str | KvBucketConfig) -> KvStore:
        """A :class:`KvStore` on the shared connection (bucket created if missing)."""
        config = bucket if isinstance(bucket, KvBucketConfig) else KvBucketConfig(bucket=bucket)
        return await self._cached(self._kv, config.bucket, lambda: KvStore(config, self._connection))

    async def objects(self, bucket: str | ObjectStoreConfig) -> ShipObjectStore:
        """A :class:`ShipObjectStore` on the shared connection (bucket created if missing)."""
        config = bucket if isinstance(bucket, ObjectStoreConfig) else ObjectStoreConfig(bucket=bucket)
        return await self._cached(self._objects, config.bucket, lambda: ShipObjectStore(config, self._connection))

    async def job_queue(self, name: str) -> JobQueue[Any]:
        """The connected :class:`JobQueue` ``name`` on the shared connection."""

        def make() -> JobQueue[Any]:
            return JobQueue(
                self._connection,
                name=name,
                source=self._source,
                event_stream=self._event_stream.name,
                event_prefix=self._event_prefix,
            )

        return await self._cached(self._job_queues, name, make)

    async def close_job_queues(self) -> None:
        """Close every queue opened so far, newest first (their last events and counts flushed)."""
        queues, self._job_queues = self._job_queues, {}
        for queue in reversed(queues.values()):
            await queue.close()

    async def _cached(self, cache: dict[str, StoreT], name: str, make: Callable[[], StoreT]) -> StoreT:
        """The connected store ``name`` from ``cache``, made and connected on first use (once)."""
        store = cache.get(name)
        if store is None:
            async with self._making:
                store = cache.get(name)
                if store is None:
                    store = cache[name] = await make().connect()
        return store
