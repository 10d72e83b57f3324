"""EventBus and DurableConsumer against a real JetStream server (contract §1 to §3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from nats.js import api
from structlog.testing import capture_logs

import shipkit.primitives.eventbus as eventbus_module
from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    ConfigurationError,
    InvalidNameError,
    NotConnectedError,
    ProvisioningError,
    SerializationError,
    StreamNotFoundError,
)
from shipkit.models import ShipEvent
from shipkit.primitives.eventbus import (
    DurableConsumer,
    EventBus,
    close_global_bus,
    emit_event,
    get_global_bus,
    set_global_bus,
    ship_event_handler,
)
from shipkit.server import NatsServer

SHIP_EVENT_KEYS = ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]


@pytest_asyncio.fixture
async def bus(shipkit_connection: ConnectionManager) -> AsyncIterator[EventBus]:
    """A connected EventBus (source "tester") on the default SHIP_EVENTS stream."""
    event_bus = await EventBus(shipkit_connection, source="tester").connect()
    try:
        yield event_bus
    finally:
        await event_bus.close()


def collector() -> tuple[asyncio.Queue[ShipEvent], Any]:
    """A queue and an async handler that puts every event into it."""
    queue: asyncio.Queue[ShipEvent] = asyncio.Queue()

    async def handler(event: ShipEvent) -> None:
        await queue.put(event)

    return queue, handler


async def get(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), timeout=5)


async def stored(nc: Any, stream: str = "SHIP_EVENTS") -> list[Any]:
    """Every message stored in ``stream``, read with a raw client."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]


# -- emitting ----------------------------------------------------------------------------------------


async def test_emit_stores_contract_ship_event(bus: EventBus, raw: Any) -> None:
    """emit stores a ShipEvent on ship.events.{type}: six keys in order, types as the contract says."""
    sent = await bus.emit("item.created", {"id": 7})
    [msg] = await stored(raw)  # the ack was awaited, so it is stored now
    body = json.loads(msg.data)
    assert msg.subject == "ship.events.item.created"
    assert list(body) == SHIP_EVENT_KEYS
    assert body == {
        "event_type": "item.created",
        "timestamp": sent.timestamp,
        "source": "tester",
        "payload": {"id": 7},
        "correlation_id": sent.correlation_id,
        "version": "1.0",
    }
    assert body["timestamp"].endswith("+00:00")
    assert len(body["correlation_id"]) == 8 and int(body["correlation_id"], 16) >= 0
    assert b": " not in msg.data and b", " not in msg.data


async def test_emit_null_payload_and_given_correlation_id(bus: EventBus, raw: Any) -> None:
    """A None payload is written as null; a given correlation id is kept; it is never null."""
    await bus.emit("ping", None, correlation_id="feedbeef")
    [msg] = await stored(raw)
    body = json.loads(msg.data)
    assert body["payload"] is None
    assert body["correlation_id"] == "feedbeef"


async def test_publish_event_publishes_a_prepared_event(bus: EventBus, raw: Any) -> None:
    """publish_event sends the given ShipEvent unchanged to {prefix}.{event_type}."""
    event = ShipEvent.new("job.done", [1], source="elsewhere", correlation_id="00000001")
    await bus.publish_event(event)
    [msg] = await stored(raw)
    assert msg.subject == "ship.events.job.done"
    assert msg.data == event.to_json()


async def test_emit_without_stream_names_the_subject(shipkit_connection: ConnectionManager) -> None:
    """With no stream capturing the subject, emit raises StreamNotFoundError naming it."""
    unprovisioned = EventBus(shipkit_connection)  # connect() not called: no stream exists
    with pytest.raises(StreamNotFoundError, match=r"ship\.events\.item\.created"):
        await unprovisioned.emit("item.created", 1)


async def test_msg_id_deduplicates(bus: EventBus, raw: Any) -> None:
    """Two emits with the same msg_id are stored once (Nats-Msg-Id header)."""
    await bus.emit("order.placed", 1, msg_id="order-1")
    await bus.emit("order.placed", 1, msg_id="order-1")
    await bus.emit("order.placed", 2, msg_id="order-2")
    messages = await stored(raw)
    assert [json.loads(m.data)["payload"] for m in messages] == [1, 2]
    assert messages[0].headers["Nats-Msg-Id"] == "order-1"


@pytest.mark.parametrize("bad", ["", "item.*", "item.>", "has space", "a..b"])
async def test_invalid_event_type_raises_before_sending(bus: EventBus, raw: Any, bad: str) -> None:
    """Wildcards, spaces and empty types raise InvalidNameError; nothing is stored."""
    with pytest.raises(InvalidNameError):
        await bus.emit(bad, 1)
    with pytest.raises(InvalidNameError):
        await bus.emit_many([("ok", 1), (bad, 2)])
    assert (await raw.jetstream().stream_info("SHIP_EVENTS")).state.messages == 0


async def test_unencodable_payload_raises_serialization_error(bus: EventBus, raw: Any) -> None:
    """A payload that is not JSON-able raises SerializationError and nothing is stored."""
    with pytest.raises(SerializationError):
        await bus.emit("x", {"when": object()})
    assert (await raw.jetstream().stream_info("SHIP_EVENTS")).state.messages == 0


async def test_emit_many_pipelines_and_keeps_order(bus: EventBus, raw: Any) -> None:
    """emit_many stores every event, in order, from pairs and prepared events alike."""
    prepared = ShipEvent.new("prepared", "p", source="other")
    sent = await bus.emit_many([*(("bulk.item", i) for i in range(200)), prepared])
    messages = await stored(raw)
    assert len(messages) == len(sent) == 201
    assert [json.loads(m.data)["payload"] for m in messages[:200]] == list(range(200))
    assert messages[200].data == prepared.to_json()
    assert all(json.loads(m.data)["source"] == "tester" for m in messages[:200])


async def test_emit_many_with_msg_ids_deduplicates(bus: EventBus, raw: Any) -> None:
    """emit_many honours per-event msg ids."""
    await bus.emit_many([("a", 1), ("a", 1), ("a", 2)], msg_ids=["k1", "k1", None])
    assert [json.loads(m.data)["payload"] for m in await stored(raw)] == [1, 2]
    with pytest.raises(ConfigurationError):
        await bus.emit_many([("a", 1)], msg_ids=[])


async def test_emit_many_without_stream_raises(shipkit_connection: ConnectionManager) -> None:
    """Pipelined publishes with no stream raise StreamNotFoundError saying how many failed."""
    unprovisioned = EventBus(shipkit_connection)
    with pytest.raises(StreamNotFoundError, match="3 of 3"):
        await unprovisioned.emit_many([("a", 1), ("b", 2), ("c", 3)])


async def test_emit_before_connect_raises_not_connected(shipkit_nats_url: str) -> None:
    """Emitting on a bus whose connection is not open raises NotConnectedError."""
    with pytest.raises(NotConnectedError):
        await EventBus(shipkit_nats_url).emit("x", 1)


async def test_with_source_and_with_stream(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """with_stream/with_source return configured copies that publish to the custom stream and prefix."""
    custom = StreamConfig.new("AUDIT", "audit.>").with_max_age(3600).with_memory_storage()
    bus = await EventBus(shipkit_connection).with_stream(custom, "audit").with_source("auditor").connect()
    queue, handler = collector()
    consumer = await bus.subscribe("user.*", "audit_reader", handler)
    sent = await bus.emit("user.login", {"user": "ada"})
    [msg] = await stored(raw, "AUDIT")
    assert msg.subject == "audit.user.login"
    assert json.loads(msg.data)["source"] == "auditor"
    assert (await get(queue)) == sent
    info = await consumer.info()
    assert info.stream_name == "AUDIT" and info.config.filter_subject == "audit.user.*"
    await bus.close()


# -- subscribing -------------------------------------------------------------------------------------


async def test_new_durable_replays_retained_events(bus: EventBus) -> None:
    """A new durable with deliver='all' receives events emitted before it existed, in order."""
    sent = [await bus.emit("item.created", i) for i in range(3)]
    await bus.emit("other.thing", "filtered out")
    queue, handler = collector()
    await bus.subscribe("item.*", "replayer", handler)
    assert [await get(queue) for _ in range(3)] == sent
    later = await bus.emit("item.updated", 9)
    assert await get(queue) == later


async def test_deliver_new_skips_retained_events(bus: EventBus) -> None:
    """A new durable with deliver='new' only receives events emitted after it was created."""
    await bus.emit("item.created", "old")
    queue, handler = collector()
    await bus.subscribe("item.*", "fresh", handler, deliver="new")
    new = await bus.emit("item.created", "new")
    assert await get(queue) == new


async def test_durable_resumes_from_ack_floor(bus: EventBus) -> None:
    """Re-subscribing with the same durable gets exactly what it missed: nothing lost or repeated."""
    queue, handler = collector()
    consumer = await bus.subscribe("order.>", "resumer", handler)
    first = [await bus.emit("order.placed", i) for i in range(3)]
    assert [await get(queue) for _ in range(3)] == first
    await consumer.stop()
    missed = [await bus.emit("order.placed", i) for i in range(3, 5)]
    queue2, handler2 = collector()
    consumer2 = await bus.subscribe("order.>", "resumer", handler2)
    assert [await get(queue2) for _ in range(2)] == missed
    await consumer2.stop()
    info = await consumer2.info()
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert info.ack_floor.stream_seq == 5
    assert queue.empty() and queue2.empty()


async def test_stop_keeps_the_durable(bus: EventBus, raw: Any) -> None:
    """stop() stops consuming promptly and leaves the durable consumer on the server."""
    _, handler = collector()
    consumer = await bus.subscribe("x.*", "keeper", handler)
    await asyncio.wait_for(consumer.stop(), timeout=5)  # a 30 s pull request is open meanwhile
    assert not consumer.is_running
    info = await raw.jetstream().consumer_info("SHIP_EVENTS", "keeper")
    assert info.config.durable_name == "keeper"


async def test_handler_exception_naks_and_redelivers(bus: EventBus) -> None:
    """A handler that raises gets the same event again after the nak delay; then it is acked."""
    attempts: list[ShipEvent] = []
    done: asyncio.Queue[ShipEvent] = asyncio.Queue()

    async def flaky(event: ShipEvent) -> None:
        attempts.append(event)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        await done.put(event)

    with capture_logs() as logs:
        consumer = await bus.subscribe("task.*", "flaky", flaky, nak_delay_s=0.05)
        sent = await bus.emit("task.run", 1)
        assert await get(done) == sent
    assert attempts == [sent, sent]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["handler.failed"]
    await consumer.stop()
    info = await consumer.info()
    assert (info.num_ack_pending, info.num_redelivered, info.ack_floor.stream_seq) == (0, 0, 1)


async def test_undecodable_event_is_acked_and_skipped(bus: EventBus, raw: Any) -> None:
    """Garbage on the bus is acked and logged; the loop goes on to the next event."""
    js = raw.jetstream()
    await js.publish("ship.events.item.bad", b"\xff not json")
    await js.publish("ship.events.item.bad", b'{"payload": "no event_type"}')
    queue, handler = collector()
    with capture_logs() as logs:
        consumer = await bus.subscribe("item.*", "tolerant", handler)
        good = await bus.emit("item.good", 1)
        assert await get(queue) == good
    undecodable = [e for e in logs if e["event"] == "message.undecodable"]
    assert [e["subject"] for e in undecodable] == ["ship.events.item.bad"] * 2
    await consumer.stop()
    info = await consumer.info()
    assert (info.num_pending, info.num_ack_pending, info.ack_floor.stream_seq) == (0, 0, 3)


async def test_receives_seed_json_from_a_rust_agent(bus: EventBus, raw: Any) -> None:
    """Seed-shaped JSON (Rust field order, nanosecond Z timestamp) arrives as a ShipEvent."""
    await raw.jetstream().publish(
        "ship.events.being.spawned",
        b'{"event_type":"being.spawned","timestamp":"2026-11-27T09:30:00.123456789Z","source":"nusy",'
        b'"payload":{"id":"b-1","caps":["code"]},"correlation_id":"1a2b3c4d","version":"1.0","extra":true}',
    )
    queue, handler = collector()
    await bus.subscribe("being.*", "rust_interop", handler)
    event = await get(queue)
    assert (event.event_type, event.source, event.correlation_id, event.version) == (
        "being.spawned",
        "nusy",
        "1a2b3c4d",
        "1.0",
    )
    assert event.payload == {"id": "b-1", "caps": ["code"]}
    assert event.timestamp == "2026-11-27T09:30:00.123456789Z"


@pytest.mark.parametrize(
    ("pattern", "durable"),
    [("a b", "ok"), ("", "ok"), ("x.>.y", "ok"), ("x.*", "a.b"), ("x.*", "has space"), ("x.*", ""), ("x.*", "a*")],
)
async def test_invalid_subscription_names_raise_before_sending(
    bus: EventBus, raw: Any, pattern: str, durable: str
) -> None:
    """Invalid patterns or durable names raise InvalidNameError and create no consumer."""
    _, handler = collector()
    with pytest.raises(InvalidNameError):
        await bus.subscribe(pattern, durable, handler)
    assert (await raw.jetstream().stream_info("SHIP_EVENTS")).state.consumer_count == 0


async def test_subscribe_without_stream_raises(shipkit_connection: ConnectionManager) -> None:
    """Subscribing when the bus's stream does not exist raises StreamNotFoundError."""
    _, handler = collector()
    with pytest.raises(StreamNotFoundError):
        await EventBus(shipkit_connection).subscribe("x.*", "d", handler)


async def test_close_stops_consumers_and_owned_connection(shipkit_nats_url: str, raw: Any) -> None:
    """close() stops the bus's consumers (durables kept) and closes the connection it owns."""
    bus = await EventBus(shipkit_nats_url).connect()
    _, handler = collector()
    consumer = await bus.subscribe("x.*", "closer", handler)
    await bus.close()
    assert not consumer.is_running
    assert not bus.connection.is_connected and not bus.is_connected
    assert (await raw.jetstream().consumer_info("SHIP_EVENTS", "closer")).name == "closer"


# -- DurableConsumer -----------------------------------------------------------------------------


async def test_durable_consumer_runs_handlers_concurrently(bus: EventBus) -> None:
    """With max_in_flight=2 two raw-message handlers run at the same time."""
    started = 0
    both_running = asyncio.Event()
    finished: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(msg: Any) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), timeout=5)  # the first waits for the second
        await finished.put(msg.data)

    await bus.emit_many([("par.a", 1), ("par.b", 2)])
    consumer = DurableConsumer(
        bus.connection,
        stream="SHIP_EVENTS",
        filter_subject="ship.events.par.*",
        durable="par",
        handler=handler,
        max_in_flight=2,
    )
    await consumer.start()
    payloads = [json.loads(await get(finished))["payload"] for _ in range(2)]
    assert sorted(payloads) == [1, 2]
    await consumer.stop()


async def test_stop_naks_handlers_that_overrun_the_grace_period(bus: EventBus) -> None:
    """A handler still running at the stop timeout is cancelled and its message redelivered at once."""
    entered = asyncio.Event()

    async def stuck(event: ShipEvent) -> None:
        entered.set()
        await asyncio.Event().wait()  # never finishes on its own

    first = await bus.subscribe("slow.*", "slow", stuck)
    sent = await bus.emit("slow.job", 1)
    await asyncio.wait_for(entered.wait(), timeout=5)
    with capture_logs() as logs:
        await first.stop(timeout_s=0.01)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["consumer.handlers_cancelled"]
    queue, handler = collector()
    await bus.subscribe("slow.*", "slow", handler)  # nak'ed: redelivered now, not after ack_wait
    assert await get(queue) == sent


async def test_in_flight_handler_finishes_during_graceful_stop(bus: EventBus) -> None:
    """stop() lets a running handler finish and acks its message."""
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[ShipEvent] = []

    async def handler(event: ShipEvent) -> None:
        entered.set()
        await release.wait()
        finished.append(event)

    consumer = await bus.subscribe("grace.*", "grace", handler)
    sent = await bus.emit("grace.job", 1)
    await asyncio.wait_for(entered.wait(), timeout=5)
    stopping = asyncio.create_task(consumer.stop(timeout_s=5))
    release.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert finished == [sent]
    info = await consumer.info()
    assert (info.num_ack_pending, info.ack_floor.stream_seq) == (0, 1)


async def test_consumer_survives_a_server_restart(shipkit_server: NatsServer, shipkit_config: NatsConfig) -> None:
    """After a server restart the consumer re-arms its pull and receives new events."""
    config = shipkit_config.model_copy(update={"reconnect_time_wait_s": 0.05})
    async with ConnectionManager(config) as connection:
        bus = await EventBus(connection).connect()
        queue, handler = collector()
        consumer = DurableConsumer(
            connection,
            stream="SHIP_EVENTS",
            filter_subject="ship.events.>",
            durable="survivor",
            handler=ship_event_handler(handler),
            heartbeat_s=0.1,
            expires_s=1.0,
        )
        await consumer.start()
        before = await bus.emit("before", 1)
        assert await get(queue) == before
        await asyncio.to_thread(shipkit_server.restart)  # same port and store: the durable survives
        after = await bus.emit("after", 2)  # buffered while reconnecting, acked once back
        assert await get(queue) == after
        await consumer.stop()


async def test_handler_may_settle_the_message_itself(bus: EventBus) -> None:
    """A raw handler that acks the message itself causes no double ack and no error log."""
    seen: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(msg: Any) -> None:
        await msg.ack()
        await seen.put(msg)

    await bus.emit("self.ack", 1)
    consumer = DurableConsumer(
        bus.connection, stream="SHIP_EVENTS", filter_subject="ship.events.self.>", durable="selfack", handler=handler
    )
    with capture_logs() as logs:
        await consumer.start()
        await get(seen)
        await consumer.stop()
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    assert (await consumer.info()).num_ack_pending == 0


async def test_existing_push_consumer_is_refused(bus: EventBus, raw: Any) -> None:
    """Attaching to a durable that is a push consumer raises ConfigurationError."""
    await raw.jetstream().add_consumer(
        "SHIP_EVENTS", api.ConsumerConfig(durable_name="pusher", deliver_subject="somewhere", filter_subject=">")
    )
    _, handler = collector()
    with pytest.raises(ConfigurationError, match="push consumer"):
        await bus.subscribe("x.*", "pusher", handler)


async def test_existing_durable_with_other_filter_is_reported(bus: EventBus, raw: Any) -> None:
    """An existing durable with another filter is used as it is, with a consumer.drift warning."""
    await raw.jetstream().add_consumer(
        "SHIP_EVENTS", api.ConsumerConfig(durable_name="drifty", filter_subject="ship.events.a.*")
    )
    _, handler = collector()
    with capture_logs() as logs:
        consumer = await bus.subscribe("b.*", "drifty", handler)
    drift = [e for e in logs if e["event"] == "consumer.drift"]
    assert drift and drift[0]["actual_filter"] == ["ship.events.a.*"]
    assert (await consumer.info()).config.filter_subject == "ship.events.a.*"  # not rewritten
    await consumer.stop()


async def test_verify_mode_requires_an_existing_durable(shipkit_config: NatsConfig, bus: EventBus) -> None:
    """In provision='verify' mode a missing durable raises ProvisioningError."""
    async with ConnectionManager(shipkit_config, provision="verify") as verifying:
        consumer = DurableConsumer(
            verifying,
            stream="SHIP_EVENTS",
            filter_subject="ship.events.>",
            durable="absent",
            handler=collector()[1],
        )
        with pytest.raises(ProvisioningError):
            await consumer.start()


def test_durable_consumer_validates_options(shipkit_connection: ConnectionManager) -> None:
    """Bad names, non-async handlers and impossible limits are refused at construction."""
    _, handler = collector()

    def sync_handler(msg: Any) -> None:
        return None

    base: dict[str, Any] = {"stream": "S", "filter_subject": "a.>", "durable": "d", "handler": handler}
    bad_names: list[dict[str, Any]] = [{"stream": "a.b"}, {"filter_subject": "a b"}, {"durable": "a.b"}]
    for override in bad_names:
        with pytest.raises(InvalidNameError):
            DurableConsumer(shipkit_connection, **{**base, **override})
    bad_options: list[dict[str, Any]] = [
        {"handler": sync_handler},
        {"max_in_flight": 0},
        {"batch": 0},
        {"deliver": "last"},
        {"expires_s": 1.0, "heartbeat_s": 5.0},
    ]
    for override in bad_options:
        with pytest.raises(ConfigurationError):
            DurableConsumer(shipkit_connection, **{**base, **override})


# -- the process-wide bus ------------------------------------------------------------------------


async def test_module_emit_event_uses_installed_global_bus(bus: EventBus, raw: Any) -> None:
    """emit_event publishes through the bus installed with set_global_bus."""
    set_global_bus(bus)
    try:
        assert get_global_bus() is bus
        event = await emit_event("global.thing", {"ok": True}, correlation_id="0badcafe")
    finally:
        set_global_bus(None)
    [msg] = await stored(raw)
    assert msg.subject == "ship.events.global.thing"
    assert json.loads(msg.data)["correlation_id"] == event.correlation_id == "0badcafe"


async def test_module_emit_event_creates_global_bus_lazily(
    shipkit_nats_url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an installed bus, emit_event connects one from the environment and provisions the stream."""
    monkeypatch.setenv("SHIPKIT_NATS_URL", shipkit_nats_url)
    monkeypatch.setattr(eventbus_module, "_global_bus", None)
    try:
        await emit_event("lazy.one", 1)
        await emit_event("lazy.two", 2)
        assert get_global_bus().is_connected
    finally:
        await close_global_bus()
    assert [json.loads(m.data)["payload"] for m in await stored(raw)] == [1, 2]
    assert eventbus_module._global_bus is None


# -- the seed's call shapes ------------------------------------------------------------------------


async def test_seed_emit_event_signature(shipkit_config: NatsConfig, raw: Any) -> None:
    """Mirrors the seed's `EventBus::new(cfg).with_source(..)`, `connect()`, `bus.emit_event(event_type, payload)`."""
    bus = EventBus(shipkit_config).with_source("seed-agent")
    await bus.connect()
    try:
        event = await bus.emit_event("task.completed", {"task_id": "T-1"})
    finally:
        await bus.close()
    [msg] = await stored(raw)
    assert msg.subject == "ship.events.task.completed"
    body = json.loads(msg.data)
    assert (body["event_type"], body["source"], body["payload"]) == ("task.completed", "seed-agent", {"task_id": "T-1"})
    assert body["correlation_id"] == event.correlation_id


async def test_emit_event_with_a_prepared_event_points_to_publish_event(bus: EventBus, raw: Any) -> None:
    """emit_event(ShipEvent) (shipkit's old shape) raises ConfigurationError naming publish_event; nothing is sent."""
    event = ShipEvent.new("job.done", [1], source="elsewhere")
    with pytest.raises(ConfigurationError, match="publish_event"):
        await bus.emit_event(event)  # type: ignore[arg-type]
    assert (await raw.jetstream().stream_info("SHIP_EVENTS")).state.messages == 0
