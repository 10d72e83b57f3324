"""Tests of the kanban example, written the way docs/testing.md recommends (the guide quotes this file)."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from examples.kanban.app import service
from examples.kanban.models import Card
from shipkit import Client, ConnectionManager, ServiceError, ShipEvent
from shipkit.primitives.eventbus import EventBus
from shipkit.testing import run_service


async def test_create_then_get(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """A created card can be read back by its id."""
    async with run_service(service, shipkit_connection):
        card = await shipkit_client.request("kanban.create", {"title": "Write tests"}, response_type=Card)
        again = await shipkit_client.request("kanban.get", {"id": card.id}, response_type=Card)
    assert again == card == Card(id=1, title="Write tests", column="todo")


async def test_missing_card_is_404(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Asking for a card that does not exist raises ServiceError with code 404."""
    async with run_service(service, shipkit_connection):
        with pytest.raises(ServiceError) as caught:
            await shipkit_client.request("kanban.get", {"id": 42})
    assert (caught.value.code, caught.value.message) == (404, "card 42 not found")


async def test_empty_title_is_400_naming_the_field(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """An empty title is refused with 400 and the field error in the details."""
    async with run_service(service, shipkit_connection):
        with pytest.raises(ServiceError) as caught:
            await shipkit_client.request("kanban.create", {"title": ""})
    assert caught.value.code == 400
    assert caught.value.details[0]["loc"] == ["title"]


async def test_create_publishes_card_created(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """The mutation event reaches a consumer of the event bus, with the caller's correlation id."""
    received: asyncio.Queue[ShipEvent] = asyncio.Queue()

    async def on_event(event: ShipEvent) -> None:
        await received.put(event)

    bus = await EventBus(shipkit_connection).connect()
    consumer = await bus.subscribe("card.created", "test_observer", on_event)
    try:
        async with run_service(service, shipkit_connection):
            await shipkit_client.request("kanban.create", {"title": "x"}, correlation_id="feedf00d")
            event = await asyncio.wait_for(received.get(), timeout=5)  # a bounded wait, never a sleep
    finally:
        await consumer.stop()
    assert (event.event_type, event.source, event.correlation_id) == ("card.created", "kanban", "feedf00d")
    assert event.payload == {"id": 1, "title": "x", "column": "todo"}


async def test_any_nats_client_can_call_it(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """A plain nats-py request gets the JSON reply; an error reply carries the micro headers and the seed body."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            created = await nc.request("kanban.create", b'{"title":"raw"}', timeout=5)
            missing = await nc.request("kanban.get", b'{"id":9}', timeout=5)
    finally:
        await nc.close()
    assert json.loads(created.data) == {"id": 1, "title": "raw", "column": "todo"}
    assert missing.headers is not None
    assert missing.headers["Nats-Service-Error-Code"] == "404"
    assert json.loads(missing.data) == {"error": "card 9 not found", "code": 404}


async def test_runtime_counts(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """run_service yields the Runtime, whose counters say what happened."""
    async with run_service(service, shipkit_connection) as runtime:
        await shipkit_client.request("kanban.list")
        with pytest.raises(ServiceError):
            await shipkit_client.request("kanban.get", {"id": 1})
    assert (runtime.counts.handled, runtime.counts.failed) == (1, 1)
