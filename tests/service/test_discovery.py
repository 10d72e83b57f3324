"""NATS service discovery ($SRV PING/INFO/STATS) answered by a running Service (ADR-32 shapes)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import nats
import pytest
from nats.micro.service import ServiceInfo, ServiceStats

from shipkit import ConnectionManager, Service
from shipkit.testing import run_service


def make_service() -> Service:
    service = Service("inventory", "2.0.1", "stock levels", metadata={"team": "ops"})

    @service.handler("stock.get", metadata={"kind": "read"})
    async def get(sku: str) -> dict[str, Any]:
        """Read the stock of one SKU."""
        if sku == "bad":
            raise ValueError("no such sku")
        return {"sku": sku, "level": 3}

    return service


async def _ask(url: str, subject: str, expected: int | None = None) -> list[dict[str, Any]]:
    """Collect replies to a discovery request (no queue group: each instance answers).

    Stops after ``expected`` replies, or when none has come for half a second.
    """
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        replies = []
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return replies
            if msg.data:  # a bare status message means "no responders"
                replies.append(json.loads(msg.data))
            if expected is not None and len(replies) >= expected:
                return replies
    finally:
        await nc.close()


@pytest.mark.parametrize("scope", ["", ".inventory", ".inventory.{id}"])
async def test_ping_in_all_scopes(shipkit_connection: ConnectionManager, shipkit_nats_url: str, scope: str) -> None:
    """PING answers on $SRV.PING, $SRV.PING.name and $SRV.PING.name.id with the ping_response shape."""
    async with run_service(make_service(), shipkit_connection) as runtime:
        replies = await _ask(shipkit_nats_url, "$SRV.PING" + scope.format(id=runtime.instance_id), 1)
    assert replies == [
        {
            "type": "io.nats.micro.v1.ping_response",
            "name": "inventory",
            "id": runtime.instance_id,
            "version": "2.0.1",
            "metadata": {"team": "ops"},
        }
    ]


async def test_info_lists_endpoints(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """INFO lists each handler as an endpoint and parses with nats-py's own micro model."""
    async with run_service(make_service(), shipkit_connection):
        (info,) = await _ask(shipkit_nats_url, "$SRV.INFO.inventory", 1)
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert info["description"] == "stock levels"
    assert info["endpoints"] == [
        {"name": "stock_get", "subject": "inventory.stock.get", "queue_group": "q", "metadata": {"kind": "read"}}
    ]
    parsed = ServiceInfo.from_dict(info)
    assert parsed.endpoints[0].subject == "inventory.stock.get"


async def test_stats_has_real_counters(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """STATS reports live request/error counts, last error and integer nanosecond timings."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(make_service(), shipkit_connection):
            await nc.request("inventory.stock.get", b"a", timeout=5)
            await nc.request("inventory.stock.get", b"bad", timeout=5)
            (stats,) = await _ask(shipkit_nats_url, "$SRV.STATS", 1)
    finally:
        await nc.close()
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", stats["started"])
    (endpoint,) = stats["endpoints"]
    assert endpoint["num_requests"] == 2
    assert endpoint["num_errors"] == 1
    assert endpoint["last_error"] == "500: ValueError: no such sku"
    assert isinstance(endpoint["processing_time"], int) and endpoint["processing_time"] > 0
    assert isinstance(endpoint["average_processing_time"], int)
    parsed = ServiceStats.from_dict({**stats, "endpoints": [{**endpoint, "data": None}]})
    assert isinstance(parsed.started, datetime)


async def test_every_instance_answers(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """Two instances of one service both answer PING (discovery uses no queue group)."""
    async with (
        run_service(make_service(), shipkit_connection) as a,
        run_service(make_service(), shipkit_connection) as b,
    ):
        replies = await _ask(shipkit_nats_url, "$SRV.PING.inventory", 2)
    assert sorted(r["id"] for r in replies) == sorted([a.instance_id, b.instance_id])


async def test_discovery_stops_at_shutdown(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """After shutdown the instance no longer answers discovery."""
    async with run_service(make_service(), shipkit_connection):
        pass
    assert await _ask(shipkit_nats_url, "$SRV.PING") == []
