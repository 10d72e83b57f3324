"""The agent example end to end: being registry, heartbeats, status while working, ship_config changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from examples.agent.app import BEING_ID, CAPABILITIES, DEFAULT_HEARTBEAT_S, HEARTBEAT_KEY, presence, service
from shipkit import BeingStatus, Client, ConnectionManager, ServiceError
from shipkit.primitives.beings import BeingRegistry
from shipkit.primitives.kv import KvWatch
from shipkit.primitives.ship_config import ShipConfig
from shipkit.testing import run_service


@asynccontextmanager
async def status_changes(connection: ConnectionManager) -> AsyncIterator[KvWatch]:
    """Every write to the agent's entry in ``beings_status`` from now on."""
    registry = await BeingRegistry(connection).connect()
    async with registry.store.watch(BEING_ID, initial=False) as watch:
        yield watch


async def next_status(watch: KvWatch) -> BeingStatus:
    """The next written status (5 s at most)."""
    entry = await asyncio.wait_for(anext(watch), timeout=5)
    return BeingStatus.model_validate(entry.value)


async def status_until(client: Client, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Ask ``scout.status`` until ``predicate`` holds (watches apply changes asynchronously); 5 s at most.

    Each round is a request to the agent, so the loop waits on the network, not on a timer.
    """
    async with asyncio.timeout(5):
        while True:
            reply: dict[str, Any] = await client.request("scout.status")
            if predicate(reply):
                return reply


async def test_registers_heartbeats_and_goes_offline(shipkit_connection: ConnectionManager) -> None:
    """Registered idle at start, heartbeats at the ship_config interval, offline after shutdown."""
    config = await ShipConfig(shipkit_connection).connect()
    await config.set(HEARTBEAT_KEY, 0.02)
    registry = await BeingRegistry(shipkit_connection).connect()
    async with status_changes(shipkit_connection) as watch, run_service(service, shipkit_connection):
        registered = await next_status(watch)
        beats = [await next_status(watch) for _ in range(2)]
    final = await registry.get_status(BEING_ID)
    assert (registered.state, registered.capabilities) == ("idle", CAPABILITIES)
    assert all(beat.state == "idle" for beat in beats)
    assert registered.last_heartbeat < beats[0].last_heartbeat < beats[1].last_heartbeat
    assert final is not None
    assert final.state == "offline"  # the last write: the heartbeat task was stopped before it
    assert presence.heartbeats >= 2


async def test_status_is_working_while_surveying(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """A survey sets state working with the task id, then idle again; the report counts the words."""
    async with status_changes(shipkit_connection) as watch, run_service(service, shipkit_connection):
        registered = await next_status(watch)
        report = await shipkit_client.request(
            "scout.survey", {"task_id": "T-7", "text": "The ship, the crew and the ship's cat."}
        )
        working = await next_status(watch)
        done = await next_status(watch)
        with pytest.raises(ServiceError) as invalid:
            await shipkit_client.request("scout.survey", {"task_id": "", "text": "x"})
    assert [(s.state, s.current_task) for s in (registered, working, done)] == [
        ("idle", None),
        ("working", "T-7"),
        ("idle", None),
    ]
    assert report == {"task_id": "T-7", "words": 8, "top_words": ["the", "ship", "crew"]}
    assert invalid.value.code == 400


async def test_follows_heartbeat_interval_in_ship_config(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """An invalid value at start falls back to the default; puts change the interval live, a delete restores it."""
    config = await ShipConfig(shipkit_connection).connect()
    await config.set(HEARTBEAT_KEY, "soon")
    async with status_changes(shipkit_connection) as watch, run_service(service, shipkit_connection):
        await next_status(watch)  # registered
        first = await shipkit_client.request("scout.status")
        await config.set(HEARTBEAT_KEY, 0.02)
        await next_status(watch)  # heartbeats start at once under the new interval
        await next_status(watch)
        await config.set(HEARTBEAT_KEY, -1)  # refused by the handler's PositiveFloat annotation
        await config.set(HEARTBEAT_KEY, 0.03)
        changed = await status_until(shipkit_client, lambda s: s["heartbeat_interval_s"] == 0.03)
        await config.delete(HEARTBEAT_KEY)
        restored = await status_until(shipkit_client, lambda s: s["heartbeat_interval_s"] == DEFAULT_HEARTBEAT_S)
    assert first["heartbeat_interval_s"] == DEFAULT_HEARTBEAT_S
    assert first["being"]["being_id"] == BEING_ID
    assert changed["heartbeats"] >= 2
    assert restored["being"]["state"] == "idle"
