"""on_event, mutation events, kv_watch and on_channel end to end on a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from pydantic import BaseModel

from shipkit import ChannelMessage, Client, ConnectionManager, Context, ProvisioningError, Service, ShipEvent
from shipkit.primitives.eventbus import EventBus
from shipkit.primitives.kv import KvEntry, KvStore
from shipkit.testing import run_service


class Item(BaseModel):
    id: int
    title: str


async def _drain(queue: asyncio.Queue[Any], count: int) -> list[Any]:
    return [await asyncio.wait_for(queue.get(), timeout=5) for _ in range(count)]


async def test_on_event_receives_envelope_and_typed_payload(shipkit_connection: ConnectionManager) -> None:
    """A handler annotated ShipEvent gets the envelope; one annotated with a model gets the payload."""
    service = Service("audit")
    envelopes: asyncio.Queue[ShipEvent] = asyncio.Queue()
    items: asyncio.Queue[tuple[Item, str]] = asyncio.Queue()

    @service.on_event("item.*")
    async def every(event: ShipEvent) -> None:
        await envelopes.put(event)

    @service.on_event("item.created")
    async def created(item: Item, ctx: Context) -> None:
        await items.put((item, ctx.correlation_id))

    async with run_service(service, shipkit_connection):
        bus = await EventBus(shipkit_connection, source="test").connect()
        await bus.emit("item.created", {"id": 1, "title": "a"}, correlation_id="feedbeef")
        await bus.emit("item.deleted", {"id": 1})
        got = await _drain(envelopes, 2)
        item, correlation = await asyncio.wait_for(items.get(), timeout=5)
    assert sorted(e.event_type for e in got) == ["item.created", "item.deleted"]
    assert (item, correlation) == (Item(id=1, title="a"), "feedbeef")


async def test_failed_event_is_redelivered_and_garbage_is_skipped(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """A raising handler gets the event again (nak); undecodable bytes are acked and do not stop the loop."""
    service = Service("retry")
    attempts: asyncio.Queue[int] = asyncio.Queue()
    seen = 0

    @service.on_event("job.x", nak_delay_s=0.05)
    async def flaky(event: ShipEvent) -> None:
        nonlocal seen
        seen += 1
        await attempts.put(seen)
        if seen == 1:
            raise RuntimeError("first try fails")

    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection) as runtime:
            js = nc.jetstream()
            await js.publish("ship.events.job.x", b"not json at all")
            bus = await EventBus(shipkit_connection).connect()
            await bus.emit("job.x", None)
            assert await _drain(attempts, 2) == [1, 2]
            info = await js.consumer_info("SHIP_EVENTS", "retry_flaky")
            for _ in range(100):  # the final ack is asynchronous; poll the server a bounded number of times
                if info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.02)
                info = await js.consumer_info("SHIP_EVENTS", "retry_flaky")
            assert info.num_ack_pending == 0
            assert info.num_pending == 0
        assert runtime.counts.failed == 1
        assert runtime.counts.handled == 1
    finally:
        await nc.close()


async def test_on_event_resumes_after_restart(shipkit_connection: ConnectionManager) -> None:
    """A restarted service resumes its durable: events sent while it was down arrive, acked ones do not."""
    received: asyncio.Queue[int] = asyncio.Queue()

    def make() -> Service:
        service = Service("resumer")

        @service.on_event("tick")
        async def on_tick(n: int) -> None:
            await received.put(n)

        return service

    bus = await EventBus(shipkit_connection).connect()
    async with run_service(make(), shipkit_connection):
        for n in range(3):
            await bus.emit("tick", n)
        assert await _drain(received, 3) == [0, 1, 2]
    for n in range(3, 6):
        await bus.emit("tick", n)  # service is down
    async with run_service(make(), shipkit_connection):
        assert await _drain(received, 3) == [3, 4, 5]
        await bus.emit("tick", 6)
        assert await _drain(received, 1) == [6]
    assert received.empty()


async def test_mutation_event_lands_in_stream(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """A successful mutation handler publishes a ShipEvent to the stream; a failed one publishes nothing."""
    service = Service("kanban")

    @service.handler("create", mutation="item.created")
    async def create(item: Item) -> Item:
        if item.id < 0:
            raise ValueError("negative id")
        return item

    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            client = Client(shipkit_connection)
            await client.request("kanban.create", {"id": 7, "title": "t"}, correlation_id="0badcafe")
            with pytest.raises(Exception, match="negative id"):
                await client.request("kanban.create", {"id": -1, "title": "t"})
            js = nc.jetstream()
            info = await js.stream_info("SHIP_EVENTS")
            assert info.state.messages == 1
            msg = await js.get_msg("SHIP_EVENTS", seq=1)
    finally:
        await nc.close()
    assert msg.subject == "ship.events.item.created"
    event = json.loads(msg.data)
    assert list(event) == ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
    assert event["event_type"] == "item.created"
    assert event["source"] == "kanban"
    assert event["payload"] == {"id": 7, "title": "t"}
    assert event["correlation_id"] == "0badcafe"


async def test_mutation_callback_seed_style(shipkit_connection: ConnectionManager) -> None:
    """The seed's mutation callback maps (command, response) to an event, or to none."""
    service = Service("seedish")
    received: asyncio.Queue[ShipEvent] = asyncio.Queue()

    @service.handler("touch")
    async def touch(data: dict[str, Any]) -> dict[str, Any]:
        return data

    @service.mutation_callback
    def to_event(command: str, response: Any) -> tuple[str, Any] | None:
        return (f"{command}.done", response) if response.get("emit") else None

    @service.on_event("touch.done")
    async def done(event: ShipEvent) -> None:
        await received.put(event)

    async with run_service(service, shipkit_connection):
        client = Client(shipkit_connection)
        await client.request("seedish.touch", {"emit": False, "n": 1})
        await client.request("seedish.touch", {"emit": True, "n": 2})
        event = await asyncio.wait_for(received.get(), timeout=5)
    assert event.payload == {"emit": True, "n": 2}
    assert received.empty()


async def test_verify_mode_refuses_missing_stream(shipkit_connection: ConnectionManager) -> None:
    """provision='verify' fails at start, naming the stream, and creates nothing."""
    service = Service("strict")

    @service.on_event("x")
    async def on_x(event: ShipEvent) -> None: ...

    with pytest.raises(ProvisioningError, match="SHIP_EVENTS"):
        async with run_service(service, shipkit_connection, provision="verify"):
            pass
    names = await shipkit_connection.jetstream.streams_info()
    assert names == []


async def test_kv_watch_sees_current_values_then_changes(shipkit_connection: ConnectionManager) -> None:
    """kv_watch delivers existing values first, then puts and deletes with revisions."""
    store = await KvStore("settings", shipkit_connection).connect()
    await store.put("mode", "slow")
    service = Service("watcher")
    entries: asyncio.Queue[KvEntry] = asyncio.Queue()
    values: asyncio.Queue[str] = asyncio.Queue()

    @service.kv_watch("settings")
    async def on_entry(entry: KvEntry) -> None:
        await entries.put(entry)

    @service.kv_watch("settings", key="mode")
    async def on_mode(mode: str) -> None:
        await values.put(mode)

    async with run_service(service, shipkit_connection):
        first = await asyncio.wait_for(entries.get(), timeout=5)
        await store.put("mode", "fast")
        await store.delete("mode")
        second, third = await _drain(entries, 2)
        assert await _drain(values, 2) == ["slow", "fast"]
    assert (first.key, first.value, first.operation) == ("mode", "slow", "put")
    assert (second.value, second.operation) == ("fast", "put")
    assert third.operation == "delete"
    assert first.revision < second.revision < third.revision


async def test_two_agents_talk_over_a_channel(shipkit_connection: ConnectionManager) -> None:
    """Two services exchange channel messages; neither hears its own."""
    heard: dict[str, asyncio.Queue[ChannelMessage]] = {"alice": asyncio.Queue(), "bob": asyncio.Queue()}

    def agent(name: str) -> Service:
        service = Service(name)

        @service.on_channel("general")
        async def on_general(message: ChannelMessage) -> None:
            await heard[name].put(message)

        return service

    from shipkit.primitives.channels import ChannelService

    async with run_service(agent("alice"), shipkit_connection), run_service(agent("bob"), shipkit_connection):
        alice = await ChannelService("alice", shipkit_connection).connect()
        bob = await ChannelService("bob", shipkit_connection).connect()
        await alice.send_message("general", "hi bob")
        await bob.send_message("general", "hi alice")
        to_bob = await asyncio.wait_for(heard["bob"].get(), timeout=5)
        to_alice = await asyncio.wait_for(heard["alice"].get(), timeout=5)
    assert (to_bob.sender, to_bob.content) == ("alice", "hi bob")
    assert (to_alice.sender, to_alice.content) == ("bob", "hi alice")
    assert heard["alice"].empty() and heard["bob"].empty()
