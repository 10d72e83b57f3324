"""One trace from a client request to a job's attempts in another process, with messaging attributes."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.cli_process import ShipkitProcess, child_env
from apps.span_records import span_record
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shipkit import ConnectionManager, Service, ShipEvent, _tracing
from shipkit.jobs import JobQueue, JobState
from shipkit.service.client import Client
from shipkit.service.endpoint import Endpoint
from shipkit.service.runtime import Runtime
from shipkit.service.tracing import TracedEndpoint

sys.path.insert(0, str(Path(__file__).parent.parent / "jobs"))
from jobs_helpers import wait_state


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """shipkit's spans go to an in-memory exporter for this test (the global provider stays untouched)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        _tracing.use_tracer_provider(None)
        provider.shutdown()


def _one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [span for span in spans if span["name"] == name]
    assert len(found) == 1, (name, [span["name"] for span in spans])
    return found[0]


async def test_trace_runs_from_request_to_job_attempts_in_another_process(
    exporter: InMemorySpanExporter, shipkit_nats_url: str, shipkit_connection: ConnectionManager, tmp_path: Path
) -> None:
    """request -> handler -> mutation event -> on_event -> job submit -> both attempts (worker process): one trace."""
    spans_file = tmp_path / "worker-spans.jsonl"
    worker = await ShipkitProcess.start(
        "trace_worker:service",
        "--nats-url",
        shipkit_nats_url,
        cwd=tmp_path,
        env=child_env(SHIPKIT_TEST_SPANS=str(spans_file)),
    )
    queue: JobQueue[Any] = JobQueue(shipkit_connection)
    await queue.connect()
    service = Service("front")
    submitted: asyncio.Queue[str] = asyncio.Queue()

    @service.handler("order.create", mutation="order.created")
    async def create(order: dict[str, Any]) -> dict[str, Any]:
        return {**order, "id": "o-1"}

    @service.on_event("order.created", durable="front_invoicing")
    async def invoice_on_order(event: ShipEvent) -> None:
        await submitted.put(await queue.submit({"order": event.payload["id"]}, "invoicer", "front"))

    runtime = Runtime(service, shipkit_connection, graceful_timeout_s=5)
    await runtime.start()
    try:
        assert all(isinstance(endpoint, TracedEndpoint) for endpoint in runtime.endpoints)
        await worker.wait_for_log("service.started")
        assert await Client(shipkit_connection).request("front.order.create", {"sku": "a"}) == {"sku": "a", "id": "o-1"}
        job_id = await asyncio.wait_for(submitted.get(), timeout=10)
        job = await wait_state(queue, job_id, JobState.COMPLETE, timeout=20)
        assert job.attempt == 2
        worker.send_signal(signal.SIGTERM)
        assert await worker.wait_exit() == 0  # spans are exported as they end: the file is complete now
    finally:
        await runtime.shutdown()
        await queue.close()
        await worker.kill()
    local = [span_record(span) for span in exporter.get_finished_spans()]
    remote = [json.loads(line) for line in spans_file.read_text().splitlines()]

    request = _one(local, "request front.order.create")
    handled = _one(local, "process front.order.create")
    published = _one(local, "publish ship.events.order.created")
    consumed = _one(local, "process ship.events.order.created")
    submit = _one(local, "submit ship.jobs.jobs.dispatch")
    attempts = sorted(
        (span for span in remote if span["name"] == "process ship.jobs.jobs.dispatch.invoicer"),
        key=lambda span: span["attributes"]["shipkit.job.attempt"],
    )
    chain = [request, handled, published, consumed, submit]
    assert request["parent_id"] is None
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["span_id"], (parent["name"], child["name"])
    assert [a["attributes"]["shipkit.job.attempt"] for a in attempts] == [1, 2]
    assert all(a["parent_id"] == submit["span_id"] for a in attempts)
    assert {span["trace_id"] for span in [*chain, *attempts]} == {request["trace_id"]}

    assert [span["kind"] for span in chain] == ["CLIENT", "CONSUMER", "PRODUCER", "CONSUMER", "PRODUCER"]
    assert handled["attributes"]["messaging.system"] == "nats"
    assert handled["attributes"]["messaging.destination.name"] == "front.order.create"
    assert handled["attributes"]["messaging.operation.type"] == "process"
    assert published["attributes"]["messaging.operation.type"] == "send"
    assert (
        consumed["attributes"]["messaging.nats.stream.sequence"]
        == published["attributes"]["messaging.nats.stream.sequence"]
    )
    assert consumed["attributes"]["messaging.consumer.group.name"] == "front_invoicing"
    assert [a["attributes"]["shipkit.job.outcome"] for a in attempts] == ["fail", "complete"]
    assert [a["status"] for a in attempts] == ["ERROR", "UNSET"]
    assert attempts[0]["attributes"]["shipkit.job.id"] == job_id


async def test_failed_request_span_carries_the_error(
    exporter: InMemorySpanExporter, shipkit_connection: ConnectionManager
) -> None:
    """A handler error marks its span ERROR with the reply code; a KV watch delivery gets its own span."""
    service = Service("failing")
    delivered = asyncio.Event()

    @service.handler("boom")
    async def boom() -> None:
        raise RuntimeError("no")

    @service.kv_watch("traced_kv")
    async def watch(value: Any) -> None:
        delivered.set()

    runtime = Runtime(service, shipkit_connection)
    await runtime.start()
    try:
        with pytest.raises(Exception, match="RuntimeError"):
            await Client(shipkit_connection).request("failing.boom")
        store = await runtime.kv("traced_kv")
        await store.put("k", 1)
        await asyncio.wait_for(delivered.wait(), timeout=10)
    finally:
        await runtime.shutdown()
    spans = [span_record(span) for span in exporter.get_finished_spans()]
    handled = _one(spans, "process failing.boom")
    assert handled["status"] == "ERROR"
    assert handled["attributes"]["shipkit.reply.code"] == 500
    assert _one(spans, "request failing.boom")["status"] == "ERROR"
    assert _one(spans, "process $KV.traced_kv.>")["attributes"]["messaging.system"] == "nats"


async def test_tracing_off_builds_plain_endpoints(shipkit_connection: ConnectionManager) -> None:
    """With no tracer provider configured, endpoints are plain and carry no finished hook."""
    assert _tracing.tracer() is None
    service = Service("untraced")

    @service.handler("hi")
    async def hi() -> int:
        return 1

    runtime = Runtime(service, shipkit_connection)
    await runtime.start()
    try:
        assert [type(endpoint) for endpoint in runtime.endpoints] == [Endpoint]
        assert runtime.endpoints[0].on_finished is None
    finally:
        await runtime.shutdown()


def test_inject_and_extract_round_trip_through_plain_dicts(exporter: InMemorySpanExporter) -> None:
    """The current span travels as traceparent (and baggage) in a dict and comes back as the parent."""
    from opentelemetry import baggage, context, trace

    tracer = _tracing.tracer()
    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        with tracer.start_as_current_span("outer") as outer:
            headers = _tracing.inject({})
    finally:
        context.detach(token)
    assert headers["traceparent"].split("-")[2] == format(outer.get_span_context().span_id, "016x")
    assert "tenant=t1" in headers["baggage"]
    extracted = _tracing.extract(headers)
    assert trace.get_current_span(extracted).get_span_context().span_id == outer.get_span_context().span_id
    assert baggage.get_baggage("tenant", extracted) == "t1"


async def test_agent_prompt_is_a_span_child_of_the_callers_context(
    exporter: InMemorySpanExporter, shipkit_connection: ConnectionManager
) -> None:
    """A prompt to a hosted agent runs in a `process` span whose parent is the trace context the prompt carried."""
    service = Service("traced-agents")

    @service.agent("echoer", owner="tests")
    async def echoer(prompt: Any) -> AsyncIterator[str]:
        yield "hi"

    runtime = Runtime(service, shipkit_connection)
    await runtime.start()
    try:
        subject = service.agents[0].subjects.subject("prompt")
        tracer = _tracing.tracer()
        with tracer.start_as_current_span("caller") as caller:
            headers = _tracing.inject({})
            inbox = shipkit_connection.client.new_inbox()
            done = asyncio.Event()

            async def collect(msg: Any) -> None:
                if not msg.data and not msg.headers:  # the terminator
                    done.set()

            sub = await shipkit_connection.client.subscribe(inbox, cb=collect)
            await shipkit_connection.client.publish(subject, b"hello", reply=inbox, headers=headers)
            await asyncio.wait_for(done.wait(), timeout=10)
            await sub.unsubscribe()
        caller_id = format(caller.get_span_context().span_id, "016x")
    finally:
        await runtime.shutdown()
    spans = [span_record(span) for span in exporter.get_finished_spans()]
    prompt = _one(spans, f"process {subject}")
    assert prompt["parent_id"] == caller_id
    assert prompt["attributes"]["shipkit.agent"] == "echoer"
    assert prompt["attributes"]["messaging.system"] == "nats"
