"""What handlers, endpoints and consumers may reach of the running service: the :class:`Host` protocol.

Objects of this layer never hold a back-reference to :class:`~shipkit.service.runtime.Runtime`:
an endpoint, a consumer or a :class:`~shipkit.service.context.Context` depends only on this small
protocol, which the runtime implements. That keeps the import graph one-directional
(``host <- context <- endpoint <- consumers <- runtime``) and lets tests drive an endpoint with a
host of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient

from shipkit.config import KvBucketConfig, ObjectStoreConfig
from shipkit.connection import ConnectionManager
from shipkit.jobs import JobQueue
from shipkit.models import ShipEvent
from shipkit.primitives.kv import KvStore
from shipkit.primitives.objects import ShipObjectStore

__all__ = ["Counts", "Host"]


@dataclass
class Counts:
    """Units of work by outcome, for the shutdown summary."""

    handled: int = 0
    failed: int = 0
    cancelled: int = 0

    def add(self, other: Counts) -> None:
        """Add another unit's counts to these (a stopped consumer's, a job worker's)."""
        self.handled += other.handled
        self.failed += other.failed
        self.cancelled += other.cancelled


class Host(Protocol):
    """The running service as its handlers and consumers see it.

    Attributes:
        service_name: the service's name (bound into handler log lines).
        connection: the shared connection manager.
        client: the raw nats-py client, cached for the hot path.
        counts: handled / failed / cancelled units of work.
        force_exit: set when shutdown must not wait any longer (second SIGINT): consumers
            holding long work (job workers) interrupt it and hand it back at once.
        default_job_queue: the name of the queue ``ctx.jobs`` means.
    """

    service_name: str
    connection: ConnectionManager
    counts: Counts
    force_exit: asyncio.Event
    default_job_queue: str

    @property
    def client(self) -> NatsClient:
        """The raw nats-py client (replies, discovery)."""
        ...

    def track(self, task: asyncio.Task[Any], on_done: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        """Keep a handler task until it ends: graceful shutdown waits for it, a forced one cancels it."""
        ...

    def count_in_flight(self, probe: Callable[[], int]) -> None:
        """Register work the host does not track as tasks (running jobs), counted at shutdown."""
        ...

    async def emit(self, event_type: str, payload: Any = None, *, correlation_id: str | None = None) -> ShipEvent:
        """Publish a ``ShipEvent`` on the service's event bus and await the JetStream ack."""
        ...

    async def kv(self, bucket: str | KvBucketConfig) -> KvStore:
        """A connected :class:`KvStore` on the shared connection (bucket created if missing)."""
        ...

    async def objects(self, bucket: str | ObjectStoreConfig) -> ShipObjectStore:
        """A connected :class:`ShipObjectStore` on the shared connection (bucket created if missing)."""
        ...

    async def job_queue(self, name: str) -> JobQueue[Any]:
        """The connected :class:`JobQueue` ``name`` on the shared connection (one per process, closed at stop)."""
        ...
