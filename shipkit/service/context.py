"""What a handler can ask about its message and reach in the running service: :class:`Context`.

Declare a parameter annotated ``Context`` (or named ``ctx``) to receive it; handlers that do
not ask for it pay nothing for it.
"""

from __future__ import annotations

from typing import Any

from shipkit.config import KvBucketConfig, ObjectStoreConfig
from shipkit.connection import ConnectionManager
from shipkit.logging import get_logger
from shipkit.models import ShipEvent, new_correlation_id
from shipkit.primitives.kv import KvStore
from shipkit.primitives.objects import ShipObjectStore
from shipkit.service.host import Host
from shipkit.service.jobs import ServiceJobs

__all__ = ["CORRELATION_HEADER", "Context"]

CORRELATION_HEADER = "Shipkit-Correlation-Id"
"""Request header carrying the caller's correlation id; echoed into events and log lines."""


class Context:
    """The message being handled and the service's resources.

    Args:
        host: what the running service lets handlers reach (the runtime implements it).

    Attributes:
        subject: the subject the message arrived on.
        headers: its headers (empty dict if none).
        reply: the reply subject, if any.
        correlation_id: from the ``Shipkit-Correlation-Id`` header, the event, or a new one.
    """

    __slots__ = ("_log", "correlation_id", "headers", "host", "reply", "subject")

    def __init__(
        self,
        host: Host,
        subject: str,
        headers: dict[str, str] | None = None,
        reply: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.host = host
        self.subject = subject
        self.headers = headers or {}
        self.reply = reply or None
        self.correlation_id = correlation_id or self.headers.get(CORRELATION_HEADER) or new_correlation_id()
        self._log: Any = None

    @property
    def log(self) -> Any:
        """A structlog logger bound with the service name, subject and correlation id."""
        if self._log is None:
            self._log = get_logger("shipkit.handler").bind(
                service=self.host.service_name, subject=self.subject, correlation_id=self.correlation_id
            )
        return self._log

    @property
    def service_name(self) -> str:
        """The name of the service handling the message."""
        return self.host.service_name

    @property
    def connection(self) -> ConnectionManager:
        """The service's shared connection."""
        return self.host.connection

    async def emit(self, event_type: str, payload: Any = None) -> ShipEvent:
        """Publish a durable ``ShipEvent`` on the service's event bus (ack awaited)."""
        return await self.host.emit(event_type, payload, correlation_id=self.correlation_id)

    async def kv(self, bucket: str | KvBucketConfig) -> KvStore:
        """The service's :class:`~shipkit.primitives.kv.KvStore` for ``bucket`` (created if missing).

        Pass a :class:`~shipkit.config.KvBucketConfig` for other settings than the defaults.
        """
        return await self.host.kv(bucket)

    @property
    def jobs(self) -> ServiceJobs:
        """The service's job queue: ``await ctx.jobs.submit(payload, "worker")``; another: ``ctx.jobs("name")``."""
        return ServiceJobs(self.host, self.host.default_job_queue)

    async def objects(self, bucket: str | ObjectStoreConfig) -> ShipObjectStore:
        """The service's object store for ``bucket`` (created if missing)."""
        return await self.host.objects(bucket)
