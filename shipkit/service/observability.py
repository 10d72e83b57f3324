"""What the runtime installs when metrics or tracing are on: :class:`Observability`.

Decided once at start, never per message: when both are off, :attr:`Observability.on_finished`
is ``None`` and the ``wrap_*`` methods return what they were given, so endpoints, consumers and
job workers run exactly the code they run without this module. When on, they get hooks and
wrapped callbacks; the metrics module (and ``prometheus_client``) is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from shipkit import _tracing
from shipkit.connection import ConnectionManager
from shipkit.jobs import JobCounts, JobQueue, JobWorkerSpec
from shipkit.service.endpoint import Endpoint, FinishedHook
from shipkit.service.health import HealthServer
from shipkit.service.specs import KvWatchSpec
from shipkit.service.tracing import TracedEndpoint, chain, end_request_span, wrap_kv_watch

if TYPE_CHECKING:  # the module needs the optional prometheus-client; imported at run time only when on
    from shipkit.service.metrics import ServiceMetrics

__all__ = ["Observability", "ObservedService"]

MsgHandler = Callable[[Any], Coroutine[Any, Any, None]]


class ObservedService(Protocol):
    """What health checks and metrics read of the running service (the runtime implements it)."""

    service_name: str
    connection: ConnectionManager
    endpoints: list[Endpoint]

    @property
    def in_flight(self) -> int:
        """Handler tasks running now."""
        ...

    @property
    def ready(self) -> bool:
        """Provisioned, consumers started, and not shutting down."""
        ...


class Observability:
    """Metrics and the health server of one runtime (both optional).

    Args:
        source: the running service.
        metrics_port: serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (0: a free
            one; None: no server, no metrics).
        metrics_host: the interface to bind (loopback by default).
        job_queue: the job queue whose per-state counts are exported (None: the service has no jobs).
    """

    def __init__(
        self,
        source: ObservedService,
        *,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        job_queue: str | None = None,
    ) -> None:
        self.source = source
        self.metrics: ServiceMetrics | None = None
        self.server: HealthServer | None = None
        self._queue: JobQueue[Any] | None = None
        self.tracer = _tracing.tracer()  # decided once: a configured tracer provider turns tracing on
        if metrics_port is None:
            return
        from shipkit.service.metrics import CONTENT_TYPE, ServiceMetrics  # the optional extra, only when asked for

        async def job_counts() -> JobCounts:
            return await self._job_counts(job_queue or "jobs")

        metrics = ServiceMetrics(source, job_counts=job_counts if job_queue else None, job_queue=job_queue or "")

        async def render() -> tuple[str, bytes]:
            return CONTENT_TYPE, await metrics.render()

        self.metrics = metrics
        self.server = HealthServer(metrics_host, metrics_port, self._readiness, render)

    @property
    def on_finished(self) -> FinishedHook | None:
        """The endpoints' finished hook (None when off: one attribute check per message)."""
        return chain(
            end_request_span if self.tracer is not None else None,
            self.metrics.endpoint_finished if self.metrics is not None else None,
        )

    def new_endpoint(self, *args: Any, **kwargs: Any) -> Endpoint:
        """An :class:`Endpoint` (or a :class:`TracedEndpoint` when tracing), with the finished hook."""
        if self.tracer is not None:
            return TracedEndpoint(*args, tracer=self.tracer, on_finished=self.on_finished, **kwargs)
        return Endpoint(*args, on_finished=self.on_finished, **kwargs)

    def wrap_kv_watch(self, spec: KvWatchSpec) -> KvWatchSpec:
        """``spec`` as this process's KV watch should run it (a span per delivery when tracing)."""
        return wrap_kv_watch(self.tracer, spec) if self.tracer is not None else spec

    def wrap_event_handler(self, consumer: str, handler: MsgHandler) -> MsgHandler:
        """``handler`` as the durable ``consumer`` should run it."""
        return self.metrics.wrap_event_handler(consumer, handler) if self.metrics is not None else handler

    def wrap_job_worker(self, spec: JobWorkerSpec) -> JobWorkerSpec:
        """``spec`` as this process's job worker should run it."""
        return self.metrics.wrap_job_worker(spec) if self.metrics is not None else spec

    async def start(self) -> None:
        """Start the health server (before connecting: ``/healthz`` answers while the service starts)."""
        if self.server is not None:
            await self.server.start()

    async def stop(self) -> None:
        """Stop the server and close the job queue used for counts."""
        try:
            if self.server is not None:
                await self.server.stop()
        finally:
            queue, self._queue = self._queue, None
            if queue is not None:
                await queue.close()

    def _readiness(self) -> dict[str, bool]:
        return {"connected": self.source.connection.is_connected, "started": self.source.ready}

    async def _job_counts(self, name: str) -> JobCounts:
        if self._queue is None:
            queue: JobQueue[Any] = JobQueue(self.source.connection, name=name)
            await queue.connect()
            self._queue = queue
        return await self._queue.counts()
