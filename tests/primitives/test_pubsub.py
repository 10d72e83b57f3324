"""PubSub over core NATS: wire shape, subjects, patterns, bad input, lifecycle (contract §1, §3)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from shipkit.connection import ConnectionManager
from shipkit.errors import ConfigurationError, InvalidNameError, NotConnectedError, SerializationError
from shipkit.models import Event
from shipkit.primitives.pubsub import EventType, Publisher, PubSub, Subscriber

EVENT_KEYS = ["event_type", "source", "payload", "timestamp", "correlation_id"]


async def raw_inbox(nc: Any, subject: str) -> asyncio.Queue[Any]:
    """Subscribe ``nc`` to ``subject`` and return the queue its messages land in."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def cb(msg: Any) -> None:
        await queue.put(msg)

    await nc.subscribe(subject, cb=cb)
    await confirm_sent(nc)
    return queue


async def confirm_sent(nc: Any) -> None:
    """Wait until the server processed what ``nc`` queued (nats-py's flush() can overtake a SUB)."""
    echoed = asyncio.Event()

    async def on_echo(_msg: Any) -> None:
        echoed.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_echo)
    await nc.publish(inbox, b"")
    await asyncio.wait_for(echoed.wait(), timeout=5)
    await sub.unsubscribe()


def collector() -> tuple[asyncio.Queue[Event], Any]:
    """A queue and an async handler that puts every event into it."""
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await queue.put(event)

    return queue, handler


async def get(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), timeout=5)


# -- EventType -------------------------------------------------------------------------------------


def test_event_type_constants_are_the_seed_subjects() -> None:
    """The seed's four variants publish on heartbeat, started, stopped and error."""
    assert [t.subject for t in (EventType.HEARTBEAT, EventType.STARTED, EventType.STOPPED, EventType.ERROR)] == [
        "heartbeat",
        "started",
        "stopped",
        "error",
    ]
    assert EventType.HEARTBEAT == "heartbeat"
    assert type(str(EventType.ERROR)) is str


def test_event_type_custom_and_with_entity() -> None:
    """A custom type may be dotted; with_entity prefixes the entity id as its own token."""
    deploy = EventType.custom("deploy.started")
    assert deploy.subject == "deploy.started"
    assert deploy.with_entity("being-1") == "being-1.deploy.started"
    assert EventType.HEARTBEAT.with_entity("nusy") == "nusy.heartbeat"


@pytest.mark.parametrize("bad", ["", "a b", "deploy.*", "deploy.>", "a..b", ".a", "a."])
def test_event_type_rejects_bad_names(bad: str) -> None:
    """Empty types, whitespace, wildcards and empty tokens are refused."""
    with pytest.raises(InvalidNameError):
        EventType.custom(bad)


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "*", ">"])
def test_with_entity_rejects_bad_entity_ids(bad: str) -> None:
    """An entity id must be one subject token."""
    with pytest.raises(InvalidNameError):
        EventType.HEARTBEAT.with_entity(bad)


# -- publishing --------------------------------------------------------------------------------------


async def test_emit_writes_contract_event_on_type_subject(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """emit publishes an Event to the subject equal to its type, fields in contract order."""
    inbox = await raw_inbox(raw, "heartbeat")
    publisher = Publisher("agent-1", shipkit_connection)
    sent = await publisher.emit(EventType.HEARTBEAT, {"load": 0.5})
    msg = await get(inbox)
    body = json.loads(msg.data)
    assert msg.subject == "heartbeat"
    assert list(body) == EVENT_KEYS
    assert body["event_type"] == "heartbeat"
    assert body["source"] == "agent-1"
    assert body["payload"] == {"load": 0.5}
    assert body["correlation_id"] is None
    assert isinstance(body["timestamp"], str) and body["timestamp"].endswith("+00:00")
    assert body["timestamp"] == sent.timestamp
    assert b" " not in msg.data  # compact separators


async def test_emit_dotted_type_and_correlation_id(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """A dotted custom type is its subject; a given correlation id is written as a string."""
    inbox = await raw_inbox(raw, "deploy.started")
    await Publisher("ci", shipkit_connection).emit("deploy.started", [1, 2], correlation_id="abcd1234")
    msg = await get(inbox)
    body = json.loads(msg.data)
    assert msg.subject == "deploy.started"
    assert body["event_type"] == "deploy.started"
    assert body["correlation_id"] == "abcd1234"
    assert body["payload"] == [1, 2]


async def test_emit_being_uses_entity_subject_and_bare_type(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """emit_being publishes on {id}.{type} while event_type stays the bare type."""
    inbox = await raw_inbox(raw, "*.heartbeat")
    event = await Publisher("agent-1", shipkit_connection).emit_being("being-7", EventType.HEARTBEAT, None)
    msg = await get(inbox)
    body = json.loads(msg.data)
    assert msg.subject == "being-7.heartbeat"
    assert body["event_type"] == "heartbeat" == event.event_type
    assert body["payload"] is None
    assert list(body) == EVENT_KEYS


async def test_publish_sends_raw_bytes(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """publish sends the bytes unchanged, with no envelope."""
    inbox = await raw_inbox(raw, "raw.data")
    await Publisher(connection=shipkit_connection).publish("raw.data", b"\x00not json")
    msg = await get(inbox)
    assert msg.data == b"\x00not json"


async def test_invalid_names_raise_before_anything_is_sent(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """Wildcards, spaces and empty names raise InvalidNameError and nothing reaches the server."""
    inbox = await raw_inbox(raw, ">")
    publisher = Publisher("x", shipkit_connection)
    attempts = [
        publisher.emit("deploy.*", 1),
        publisher.emit("has space", 1),
        publisher.emit("", 1),
        publisher.emit_being("a.b", "heartbeat", 1),
        publisher.emit_being("ok", "heart beat", 1),
        publisher.emit_being("", "heartbeat", 1),
        publisher.publish("raw.>", b"x"),
        publisher.publish("", b"x"),
        publisher.emit(None, 1),  # type: ignore[arg-type]
    ]
    for attempt in attempts:
        with pytest.raises(InvalidNameError):
            await attempt
    await publisher.publish("sentinel", b"end")
    msg = await get(inbox)
    while msg.subject.startswith("_INBOX."):  # the echo confirm_sent used to set up the inbox
        msg = await get(inbox)
    assert msg.subject == "sentinel"  # the first message the server saw


async def test_unencodable_payload_raises_serialization_error(shipkit_connection: ConnectionManager) -> None:
    """A payload that is not JSON-able raises SerializationError."""
    with pytest.raises(SerializationError):
        await Publisher("x", shipkit_connection).emit("heartbeat", object())


async def test_methods_before_connect_raise_not_connected(shipkit_nats_url: str) -> None:
    """Publishing or starting before connect() raises NotConnectedError."""
    bus = PubSub("x", shipkit_nats_url)
    with pytest.raises(NotConnectedError):
        await bus.emit("heartbeat")
    _, handler = collector()
    bus.subscribe("heartbeat", handler)
    with pytest.raises(NotConnectedError):
        await bus.start()


# -- subscribing -------------------------------------------------------------------------------------


async def test_subscriber_receives_seed_json_from_a_rust_agent(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """Hand-written noesis-ship JSON (null or absent correlation id, Z timestamps) is received."""
    queue, handler = collector()
    subscriber = Subscriber(shipkit_connection)
    subscriber.subscribe("*.heartbeat", handler)
    await subscriber.start()
    await raw.publish(
        "rust-1.heartbeat",
        b'{"event_type":"heartbeat","source":"rust-1","payload":{"cpu":3},'
        b'"timestamp":"2026-11-27T10:00:00.123456789Z","correlation_id":null}',
    )
    await raw.publish(
        "rust-2.heartbeat",
        b'{"event_type":"heartbeat","source":"rust-2","payload":null,"timestamp":"2026-11-27T10:00:01+00:00"}',
    )
    first, second = await get(queue), await get(queue)
    assert (first.source, first.payload, first.correlation_id) == ("rust-1", {"cpu": 3}, None)
    assert first.timestamp == "2026-11-27T10:00:00.123456789Z"
    assert (second.source, second.payload, second.correlation_id) == ("rust-2", None, None)
    await subscriber.stop()


async def test_pubsub_round_trip_with_wildcard_pattern(shipkit_connection: ConnectionManager) -> None:
    """A PubSub receives its own emits through a '>' pattern, as Event objects."""
    queue, handler = collector()
    bus = PubSub("me", shipkit_connection)
    bus.subscribe("deploy.>", handler)
    await bus.start()
    sent = await bus.emit(EventType.custom("deploy.started"), {"v": 2}, correlation_id="c0ffee00")
    received = await get(queue)
    assert received == sent
    await bus.stop()


async def test_undecodable_message_is_logged_and_dropped(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """Garbage is logged with its subject and skipped; the next message is still handled."""
    queue, handler = collector()
    subscriber = Subscriber(shipkit_connection)
    subscriber.subscribe("heartbeat", handler)
    await subscriber.start()
    with capture_logs() as logs:
        await raw.publish("heartbeat", b"{not json")
        await raw.publish("heartbeat", b'{"source":"missing event_type"}')
        await raw.publish(  # same connection as the garbage, so it arrives after it
            "heartbeat", b'{"event_type":"heartbeat","source":"ok","payload":1,"timestamp":"2026-11-27T10:00:00Z"}'
        )
        event = await get(queue)
    assert event.source == "ok"
    undecodable = [entry for entry in logs if entry["event"] == "message.undecodable"]
    assert len(undecodable) == 2
    assert all(entry["subject"] == "heartbeat" and entry["reason"] for entry in undecodable)
    await subscriber.stop()


async def test_handler_exception_is_logged_and_loop_continues(shipkit_connection: ConnectionManager) -> None:
    """A handler that raises is logged as handler.failed and later messages still arrive."""
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event) -> None:
        if event.payload == "boom":
            raise RuntimeError("boom")
        await queue.put(event)

    bus = PubSub("me", shipkit_connection)
    bus.subscribe("started", handler)
    await bus.start()
    with capture_logs() as logs:
        await bus.emit("started", "boom")
        await bus.emit("started", "fine")
        event = await get(queue)
    assert event.payload == "fine"
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["handler.failed"]
    await bus.stop()


async def test_queue_group_delivers_each_message_once(shipkit_connection: ConnectionManager) -> None:
    """Two subscribers in one queue group share the messages: each is handled exactly once."""
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.payload)

    members = [Subscriber(shipkit_connection), Subscriber(shipkit_connection)]
    for member in members:
        member.subscribe("work", handler, queue="workers")
        await member.start()
    publisher = Publisher("p", shipkit_connection)
    for i in range(20):
        await publisher.emit("work", i)
    await confirm_sent(shipkit_connection.client)
    for member in members:
        await member.stop()  # drains: every message routed to it has been handled
    assert sorted(seen) == list(range(20))


async def test_run_returns_after_stop(shipkit_connection: ConnectionManager) -> None:
    """run() blocks while subscribed and returns once stop() is called."""
    queue, handler = collector()
    subscriber = Subscriber(shipkit_connection)
    subscriber.subscribe("stopped", handler)
    await subscriber.start()
    runner = asyncio.create_task(subscriber.run())
    await Publisher("p", shipkit_connection).emit("stopped")
    await get(queue)
    assert not runner.done()
    await subscriber.stop()
    await asyncio.wait_for(runner, timeout=5)
    assert not subscriber.is_running


async def test_close_ends_run_and_closes_owned_connection(shipkit_nats_url: str) -> None:
    """close() stops a running subscriber and closes the connection it created."""
    subscriber = await Subscriber(shipkit_nats_url).connect()
    _, handler = collector()
    subscriber.subscribe("error", handler)
    await subscriber.start()
    runner = asyncio.create_task(subscriber.run())
    await subscriber.close()
    await asyncio.wait_for(runner, timeout=5)
    assert not subscriber.connection.is_connected


async def test_shared_connection_stays_open_after_close(shipkit_connection: ConnectionManager) -> None:
    """Closing a PubSub built on a shared manager leaves that manager connected."""
    async with PubSub("x", shipkit_connection) as bus:
        await bus.emit("heartbeat")
    assert shipkit_connection.is_connected


def test_subscribe_validates_registration(shipkit_connection: ConnectionManager) -> None:
    """Bad patterns, bad queue groups and non-async handlers are refused at registration."""
    subscriber = Subscriber(shipkit_connection)
    _, handler = collector()

    def not_async(event: Event) -> None:
        return None

    for pattern in ("", "a b", "a.>.b", "a*"):
        with pytest.raises(InvalidNameError):
            subscriber.subscribe(pattern, handler)
    with pytest.raises(InvalidNameError):
        subscriber.subscribe("ok", handler, queue="has space")
    with pytest.raises(ConfigurationError):
        subscriber.subscribe("ok", not_async)  # type: ignore[arg-type]


async def test_subscribe_after_start_is_refused(shipkit_connection: ConnectionManager) -> None:
    """Registering while running raises ConfigurationError (register before start)."""
    subscriber = Subscriber(shipkit_connection)
    _, handler = collector()
    subscriber.subscribe("heartbeat", handler)
    await subscriber.start()
    with pytest.raises(ConfigurationError):
        subscriber.subscribe("started", handler)
    await subscriber.stop()
