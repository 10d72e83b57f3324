"""Prometheus metrics and health over HTTP: scraped, parsed, and checked against what the service did."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from shipkit import ConnectionManager, Service, ServiceError, ShipEvent
from shipkit.config import NatsConfig
from shipkit.jobs import JobQueue, JobState
from shipkit.server import NatsServer
from shipkit.service.client import Client
from shipkit.service.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parent.parent / "jobs"))
from jobs_helpers import wait_state


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the module's tests."""
    nats_server = NatsServer(store_dir=tmp_path_factory.mktemp("nats-metrics"))
    nats_server.start()
    try:
        yield nats_server
    finally:
        nats_server.cleanup()


@pytest_asyncio.fixture
async def connection(server: NatsServer) -> AsyncIterator[ConnectionManager]:
    """A connection to the module's server."""
    manager = ConnectionManager(NatsConfig.from_url(server.url))
    await manager.connect()
    try:
        yield manager
    finally:
        await manager.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def _scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


async def test_requests_events_jobs_and_connection_are_exported(connection: ConnectionManager) -> None:
    """Requests, errors, latency, consumed/failed/redelivered events, job states and attempts show in a scrape."""
    service = Service("metered")
    seen = asyncio.Event()
    failures_left = [1]

    @service.handler("echo", mutation="thing.echoed")
    async def echo(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("fail"):
            raise ServiceError(409, "refused")
        return data

    @service.on_event("thing.*", durable="metered_things", nak_delay_s=0.05)
    async def on_thing(event: ShipEvent) -> None:
        if failures_left[0]:
            failures_left[0] -= 1
            raise RuntimeError("first delivery fails")  # redelivered after nak_delay_s
        seen.set()

    @service.job_worker("adder")
    async def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    runtime = Runtime(service, connection, graceful_timeout_s=5, metrics_port=0)
    await runtime.start()
    queue: JobQueue[Any] = JobQueue(connection)
    await queue.connect()
    try:
        assert runtime.observability.server is not None
        client = Client(connection)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.observability.server.port}") as http:
            assert await client.request("metered.echo", {"x": 1}) == {"x": 1}
            with pytest.raises(ServiceError):
                await client.request("metered.echo", {"fail": True})
            await asyncio.wait_for(seen.wait(), timeout=10)
            job_id = await queue.submit({"a": 2, "b": 3}, "adder", "test")
            await wait_state(queue, job_id, JobState.COMPLETE)
            samples = await _scrape(http)
    finally:
        await queue.close()
        await runtime.shutdown()
    svc = {"service": "metered"}
    assert _value(samples, "shipkit_requests_total", endpoint="echo", **svc) == 2
    assert _value(samples, "shipkit_request_errors_total", endpoint="echo", **svc) == 1
    assert _value(samples, "shipkit_request_duration_seconds_count", endpoint="echo", **svc) == 2
    assert _value(samples, "shipkit_request_duration_seconds_bucket", endpoint="echo", le="+Inf", **svc) == 2
    consumer = {"consumer": "metered_things", **svc}
    assert _value(samples, "shipkit_events_consumed_total", **consumer) == 1
    assert _value(samples, "shipkit_events_failed_total", **consumer) == 1
    assert _value(samples, "shipkit_events_redelivered_total", **consumer) == 1
    attempts = {"worker": "adder", "outcome": "ok", **svc}
    assert _value(samples, "shipkit_job_attempt_duration_seconds_count", **attempts) == 1
    assert _value(samples, "shipkit_jobs", queue="jobs", state="complete") == 1
    assert _value(samples, "shipkit_in_flight", kind="requests", **svc) == 0
    assert _value(samples, "shipkit_connected", **svc) == 1
    assert _value(samples, "shipkit_reconnects_total", **svc) == 0


async def test_healthz_and_readyz_follow_the_lifecycle(connection: ConnectionManager) -> None:
    """/healthz answers while starting; /readyz is 200 once running and 503 once shutting down."""
    service = Service("probed")
    entered, release = asyncio.Event(), asyncio.Event()
    readiness_during_shutdown: list[int] = []

    @service.handler("slow")
    async def slow() -> dict[str, bool]:
        entered.set()
        await release.wait()
        return {"done": True}

    runtime = Runtime(service, connection, graceful_timeout_s=5, metrics_port=0)
    await runtime.start()
    assert runtime.observability.server is not None
    base = f"http://127.0.0.1:{runtime.observability.server.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"connected": True, "started": True}
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/readyz")).status_code == 405
        pending = asyncio.ensure_future(Client(connection).request("probed.slow", None, timeout_s=10))
        await asyncio.wait_for(entered.wait(), timeout=10)
        assert runtime.in_flight == 1
        shutdown = asyncio.ensure_future(runtime.shutdown())
        await asyncio.sleep(0)  # one loop step: shutdown marks the runtime stopping before its first await
        assert not runtime.ready
        readiness_during_shutdown.append((await http.get("/readyz")).status_code)  # the handler still holds it
        release.set()
        await shutdown
        assert await pending == {"done": True}
    assert readiness_during_shutdown == [503]
    with pytest.raises(httpx.ConnectError):  # the server stopped with the runtime
        async with httpx.AsyncClient(base_url=base) as http:
            await http.get("/healthz")


async def test_metrics_off_installs_nothing(connection: ConnectionManager) -> None:
    """Without a metrics port no server starts and endpoints carry no hook (the hot path is unchanged)."""
    service = Service("plain")

    @service.handler("hi")
    async def hi() -> str:
        return "hi"

    runtime = Runtime(service, connection)
    await runtime.start()
    try:
        assert runtime.observability.server is None
        assert runtime.observability.metrics is None
        assert [endpoint.on_finished for endpoint in runtime.endpoints] == [None]
    finally:
        await runtime.shutdown()
