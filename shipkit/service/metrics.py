"""Prometheus metrics of a running service: :class:`ServiceMetrics` (the ``metrics`` extra).

Zero cost when off: the runtime imports this module only when a metrics port is configured, and
everything it observes per message goes through hooks that are ``None`` otherwise. What already
exists as a counter (an endpoint's requests and errors, the connection's reconnects, the tasks in
flight, the job queue's per-state counters) is read at scrape time, not counted twice.

Metric names (every one labelled ``service``):

- ``shipkit_requests_total`` / ``shipkit_request_errors_total`` {endpoint}: requests and error replies;
- ``shipkit_request_duration_seconds`` {endpoint}: handling latency histogram;
- ``shipkit_events_consumed_total`` / ``_failed_total`` / ``_redelivered_total`` {consumer};
- ``shipkit_job_attempt_duration_seconds`` {worker, outcome}: attempts, ``outcome`` ok/error/cancelled;
- ``shipkit_jobs`` {queue, state}: jobs per state (the queue's counters);
- ``shipkit_in_flight`` {kind}: requests, events and jobs being handled now;
- ``shipkit_reconnects_total``, ``shipkit_connected``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from nats.aio.msg import Msg

from shipkit.connection import ConnectionManager
from shipkit.errors import ConfigurationError
from shipkit.jobs import JobCounts, JobWorkerSpec
from shipkit.service.endpoint import Endpoint

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # the optional extra is missing: say how to get it
    raise ConfigurationError("metrics need prometheus-client: pip install 'shipkit[metrics]'") from exc

__all__ = ["CONTENT_TYPE", "MetricsSource", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The exposition format's content type."""

MsgHandler = Callable[[Any], Coroutine[Any, Any, None]]


class MetricsSource(Protocol):
    """What the scrape reads of the running service (the runtime implements it)."""

    service_name: str
    connection: ConnectionManager
    endpoints: list[Endpoint]

    @property
    def in_flight(self) -> int:
        """Handler tasks running now."""
        ...


class ServiceMetrics:
    """The metrics of one running service, in a registry of its own.

    Args:
        source: the running service, read at scrape time.
        job_counts: ``async () -> JobCounts`` of the service's job queue (None: no jobs).
        job_queue: the queue's name, for the ``queue`` label.
    """

    def __init__(
        self,
        source: MetricsSource,
        *,
        job_counts: Callable[[], Coroutine[Any, Any, JobCounts]] | None = None,
        job_queue: str = "",
    ) -> None:
        self.source = source
        self.registry = CollectorRegistry(auto_describe=True)
        self._job_counts = job_counts
        self._job_queue = job_queue
        self._last_counts: JobCounts | None = None
        self._events_in_flight = 0
        self._jobs_in_flight = 0
        self._durations: dict[str, Any] = {}
        labels = ("service",)
        self.request_duration = Histogram(
            "shipkit_request_duration_seconds",
            "Time from a request's arrival to its reply.",
            (*labels, "endpoint"),
            registry=self.registry,
        )
        self.events = {
            what: Counter(
                f"shipkit_events_{what}",
                f"Events {what} by a durable consumer.",
                (*labels, "consumer"),
                registry=self.registry,
            )
            for what in ("consumed", "failed", "redelivered")
        }
        self.attempt_duration = Histogram(
            "shipkit_job_attempt_duration_seconds",
            "Duration of job attempts run by this process.",
            (*labels, "worker", "outcome"),
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
            registry=self.registry,
        )
        self.registry.register(_ScrapeTimeCollector(self))

    # -- per-message hooks (installed only when metrics are on) -------------------------------

    def endpoint_finished(self, endpoint: Endpoint, msg: Msg, elapsed_ns: int, code: int) -> None:
        """:data:`~shipkit.service.endpoint.FinishedHook`: observe one answered request."""
        child = self._durations.get(endpoint.name)
        if child is None:  # once per endpoint: `labels()` takes a lock and builds a key per call
            child = self._durations[endpoint.name] = self.request_duration.labels(
                self.source.service_name, endpoint.name
            )
        child.observe(elapsed_ns / 1e9)

    def wrap_event_handler(self, consumer: str, handler: MsgHandler) -> MsgHandler:
        """``handler`` counting consumed, failed and redelivered events for ``consumer``."""
        service = self.source.service_name
        consumed, failed, redelivered = (self.events[w].labels(service, consumer) for w in self.events)

        async def counted(msg: Any) -> None:
            if msg.metadata.num_delivered > 1:
                redelivered.inc()
            self._events_in_flight += 1
            try:
                await handler(msg)
            except asyncio.CancelledError:
                raise  # stopped at shutdown: given back (nak'ed), neither consumed nor failed
            except BaseException:
                failed.inc()
                raise
            finally:
                self._events_in_flight -= 1
            consumed.inc()

        return counted

    def wrap_job_worker(self, spec: JobWorkerSpec) -> JobWorkerSpec:
        """``spec`` with a handler timing each attempt (same signature, same policies)."""
        func = spec.func
        by_outcome = {
            outcome: self.attempt_duration.labels(self.source.service_name, spec.worker, outcome)
            for outcome in ("ok", "error", "cancelled")
        }

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            self._jobs_in_flight += 1
            try:
                result = await func(*args, **kwargs)
            except asyncio.CancelledError:
                by_outcome["cancelled"].observe(time.perf_counter() - started)
                raise
            except BaseException:
                by_outcome["error"].observe(time.perf_counter() - started)
                raise
            finally:
                self._jobs_in_flight -= 1
            by_outcome["ok"].observe(time.perf_counter() - started)
            return result

        return replace(spec, func=timed)

    # -- scraping -------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text, after reading the job counters (one request to the server)."""
        if self._job_counts is not None:
            self._last_counts = await self._job_counts()
        return generate_latest(self.registry)

    def scrape_families(self) -> Iterator[Any]:
        """The metrics read at scrape time (see :class:`_ScrapeTimeCollector`)."""
        source, service = self.source, self.source.service_name
        requests = CounterMetricFamily(
            "shipkit_requests", "Requests received per endpoint.", labels=["service", "endpoint"]
        )
        errors = CounterMetricFamily(
            "shipkit_request_errors", "Error replies per endpoint.", labels=["service", "endpoint"]
        )
        for endpoint in source.endpoints:
            requests.add_metric([service, endpoint.name], endpoint.num_requests)
            errors.add_metric([service, endpoint.name], endpoint.num_errors)
        yield requests
        yield errors
        in_flight = GaugeMetricFamily("shipkit_in_flight", "Work being handled now.", labels=["service", "kind"])
        in_flight.add_metric([service, "requests"], source.in_flight)
        in_flight.add_metric([service, "events"], self._events_in_flight)
        in_flight.add_metric([service, "jobs"], self._jobs_in_flight)
        yield in_flight
        connection = source.connection
        client = connection.client if connection.is_connected else None
        reconnects = client.stats.get("reconnects", 0) if client is not None else 0
        yield _single(
            CounterMetricFamily("shipkit_reconnects", "Reconnects to the NATS server.", labels=["service"]),
            service,
            reconnects,
        )
        yield _single(
            GaugeMetricFamily("shipkit_connected", "1 while connected to NATS.", labels=["service"]),
            service,
            1 if connection.is_connected else 0,
        )
        if self._last_counts is not None:
            jobs = GaugeMetricFamily("shipkit_jobs", "Jobs per state in the queue.", labels=["queue", "state"])
            for state, count in self._last_counts.as_dict().items():
                jobs.add_metric([self._job_queue, state], count)
            yield jobs


def _single(family: Any, service: str, value: float) -> Any:
    family.add_metric([service], value)
    return family


class _ScrapeTimeCollector(Collector):
    """Yields what :meth:`ServiceMetrics.scrape_families` reads from the running service."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Sequence[Any]:
        return list(self._metrics.scrape_families())
