"""NatsServiceBuilder and ServiceArgs: the seed's request-reply behaviour byte for byte."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import nats
import pytest

from shipkit import ConnectionManager, StreamConfig
from shipkit.service.builder import NatsServiceBuilder, ServiceArgs
from shipkit.testing import run_service


async def list_items(payload: bytes) -> bytes:
    return b'{"items":[]}'


async def create(payload: bytes) -> bytes:
    return payload


async def fallback(subject: str, payload: bytes) -> bytes:
    return json.dumps({"subject": subject}).encode()


def test_dispatch_in_process_follows_seed_order() -> None:
    """dispatch: named handler, then default handler with the full subject, then UNKNOWN_COMMAND."""
    plain = NatsServiceBuilder("kanban").handler("list", list_items)
    with_default = NatsServiceBuilder("kanban").handler("list", list_items).default_handler(fallback)

    async def scenario() -> tuple[bytes, bytes, bytes]:
        return (
            await plain.dispatch("kanban.list", b""),
            await plain.dispatch("kanban.nope", b""),
            await with_default.dispatch("kanban.other", b""),
        )

    named, unknown, default = asyncio.run(scenario())
    assert named == b'{"items":[]}'
    assert unknown == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'
    assert json.loads(default) == {"subject": "kanban.other"}


async def test_running_builder_answers_bytes_unchanged(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """The reply body is the handler's bytes unchanged, and unknown commands get the seed's 404 body."""
    service = NatsServiceBuilder("kanban").handler("create", create).build()
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            echoed = await nc.request("kanban.create", b"  not json, kept as is  ", timeout=5)
            unknown = await nc.request("kanban.nope", b"", timeout=5)
    finally:
        await nc.close()
    assert echoed.data == b"  not json, kept as is  "
    assert unknown.data == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'


async def test_mutation_events_core_without_stream(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """Without an event stream, the mutation event's raw payload goes over core NATS to {prefix}.{type}."""
    service = (
        NatsServiceBuilder("kanban")
        .handler("create", create)
        .event_prefix("kanban.events")
        .mutation_callback(lambda command, response: (f"item.{command}d", json.loads(response)))
        .build()
    )
    nc = await nats.connect(shipkit_nats_url)
    try:
        sub = await nc.subscribe("kanban.events.>")
        async with run_service(service, shipkit_connection):
            await nc.request("kanban.create", b'{"id":1}', timeout=5)
            event = await sub.next_msg(timeout=5)
        streams = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    assert event.subject == "kanban.events.item.created"
    assert event.data == b'{"id":1}'
    assert streams == []


async def test_mutation_events_jetstream_with_stream(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """With event_bus_stream, the event is a ShipEvent stored in that stream (callback sees the reply bytes)."""
    seen: list[object] = []

    def to_event(command: str, response: bytes) -> tuple[str, object]:
        seen.append(response)
        return "item.created", json.loads(response)

    service = (
        NatsServiceBuilder("kanban")
        .handler("create", create)
        .event_prefix("kanban.events")
        .event_bus_stream(StreamConfig.new("KANBAN_EVENTS", "kanban.events.>"))
        .mutation_callback(to_event)
        .build()
    )
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            await nc.request("kanban.create", b'{"id": 2}', timeout=5)
            msg = await nc.jetstream().get_msg("KANBAN_EVENTS", seq=1)
    finally:
        await nc.close()
    assert seen == [b'{"id": 2}']
    assert msg.subject == "kanban.events.item.created"
    event = json.loads(msg.data)
    assert list(event) == ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
    assert (event["event_type"], event["source"], event["payload"]) == ("item.created", "kanban", {"id": 2})


async def test_run_stops_on_sigterm_and_runs_shutdown_hooks(shipkit_nats_url: str) -> None:
    """run() answers requests, and SIGTERM stops it cleanly after running on_shutdown hooks."""
    stopped = asyncio.Event()

    async def on_stop() -> None:
        stopped.set()

    builder = NatsServiceBuilder("svc").nats_url(shipkit_nats_url).handler("list", list_items).on_shutdown(on_stop)
    previous = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(builder.run(graceful_timeout_s=2))
    nc = await nats.connect(shipkit_nats_url)
    try:
        for _ in range(200):  # wait (bounded) until the service subscribed
            try:
                reply = await nc.request("svc.list", b"", timeout=0.5)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.02)
        assert reply.data == b'{"items":[]}'
        signal.raise_signal(signal.SIGTERM)
        counts = await asyncio.wait_for(task, timeout=10)
    finally:
        await nc.close()
        signal.signal(signal.SIGTERM, previous)
    assert stopped.is_set()
    assert counts.handled >= 1
    assert signal.getsignal(signal.SIGTERM) == previous


def test_service_args_defaults_and_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """ServiceArgs: --data-dir defaults to '.', --nats-url to localhost:4222; both parse."""
    monkeypatch.delenv("SHIPKIT_NATS_URL", raising=False)
    monkeypatch.delenv("NATS_URL", raising=False)
    assert ServiceArgs.parse([]) == ServiceArgs(data_dir=Path("."), nats_url="nats://localhost:4222")
    parsed = ServiceArgs.parse(["--data-dir", "/tmp/x", "--nats-url", "nats://h:1"])
    assert parsed == ServiceArgs(data_dir=Path("/tmp/x"), nats_url="nats://h:1")
    monkeypatch.setenv("NATS_URL", "nats://env:2")
    assert ServiceArgs.parse([]).nats_url == "nats://env:2"
