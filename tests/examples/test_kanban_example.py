"""The kanban example end to end: commands, errors, mutation events, the audit trail, client and demo scripts."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from apps.cli_process import SHIPKIT_CLI, ShipkitProcess, child_env

from examples.kanban import client as kanban_client
from examples.kanban.app import CARDS_BUCKET, service, trail
from examples.kanban.models import Card
from shipkit import Client, ConnectionManager, ServiceError
from shipkit.primitives.eventbus import EventBus
from shipkit.primitives.kv import KvStore
from shipkit.testing import run_service

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_create_move_get_list(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Cards are created with increasing ids, moved between columns, read back and listed by column."""
    async with run_service(service, shipkit_connection):
        first = await shipkit_client.request("kanban.create", {"title": "a"}, response_type=Card)
        second = await shipkit_client.request("kanban.create", {"title": "b", "column": "doing"}, response_type=Card)
        moved = await shipkit_client.request("kanban.move", {"id": 1, "column": "done"}, response_type=Card)
        got = await shipkit_client.request("kanban.get", {"id": 1}, response_type=Card)
        everything = await shipkit_client.request("kanban.list", b"", response_type=list[Card])
        doing = await shipkit_client.request("kanban.list", {"column": "doing"}, response_type=list[Card])
    assert first == Card(id=1, title="a", column="todo")
    assert second == Card(id=2, title="b", column="doing")
    assert moved == got == Card(id=1, title="a", column="done")
    assert everything == [moved, second]
    assert doing == [second]


async def test_cards_are_stored_in_the_kv_bucket(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """The board lives in KV (``card.{id}`` and ``next_id``), readable by any client."""
    async with run_service(service, shipkit_connection):
        await shipkit_client.request("kanban.create", {"title": "stored"})
    store = await KvStore(CARDS_BUCKET, shipkit_connection).connect()
    assert await store.get("card.1") == {"id": 1, "title": "stored", "column": "todo"}
    assert await store.get("next_id") == 1


async def test_concurrent_creates_get_distinct_ids(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """Twenty concurrent creates get ids 1..20: the counter is a compare-and-set, not a lost update."""
    async with run_service(service, shipkit_connection):
        cards = await asyncio.gather(
            *(shipkit_client.request("kanban.create", {"title": f"t{n}"}, response_type=Card) for n in range(20))
        )
    assert sorted(card.id for card in cards) == list(range(1, 21))


async def test_missing_card_is_404_and_bad_payload_is_400(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """get/move of an unknown card answer 404; an empty title answers 400 naming the field."""
    async with run_service(service, shipkit_connection):
        with pytest.raises(ServiceError) as missing:
            await shipkit_client.request("kanban.get", {"id": 42})
        with pytest.raises(ServiceError) as unmovable:
            await shipkit_client.request("kanban.move", {"id": 42, "column": "done"})
        with pytest.raises(ServiceError) as invalid:
            await shipkit_client.request("kanban.create", {"title": ""})
        with pytest.raises(ServiceError) as bad_column:
            await shipkit_client.request("kanban.create", {"title": "x", "column": "someday"})
    assert (missing.value.code, missing.value.message) == (404, "card 42 not found")
    assert (unmovable.value.code, unmovable.value.message) == (404, "card 42 not found")
    assert invalid.value.code == 400
    assert invalid.value.details[0]["loc"] == ["title"]
    assert bad_column.value.code == 400
    assert bad_column.value.details[0]["loc"] == ["column"]


async def test_mutations_reach_the_stream_and_the_audit_trail(
    shipkit_connection: ConnectionManager, shipkit_client: Client, shipkit_nats_url: str
) -> None:
    """create and move publish card.created/card.moved with the caller's correlation id; failures publish none."""
    async with run_service(service, shipkit_connection):
        await shipkit_client.request("kanban.create", {"title": "a"}, correlation_id="00c0ffee")
        with pytest.raises(ServiceError):
            await shipkit_client.request("kanban.move", {"id": 7, "column": "done"})
        await shipkit_client.request("kanban.move", {"id": 1, "column": "doing"}, correlation_id="00beef00")
        entries = await trail.wait_for(2)
        served = await shipkit_client.request("kanban.audit")
    assert [(e.event_type, e.card.column, e.correlation_id) for e in entries] == [
        ("card.created", "todo", "00c0ffee"),
        ("card.moved", "doing", "00beef00"),
    ]
    assert [entry["event_type"] for entry in served] == ["card.created", "card.moved"]
    nc = await nats.connect(shipkit_nats_url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("SHIP_EVENTS")).state.messages == 2
        raw = await js.get_msg("SHIP_EVENTS", seq=2)
    finally:
        await nc.close()
    assert raw.subject == "ship.events.card.moved"
    event = json.loads(raw.data)
    assert list(event) == ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
    assert (event["source"], event["payload"]) == ("kanban", {"id": 1, "title": "a", "column": "doing"})


async def test_audit_skips_events_that_are_not_cards(shipkit_connection: ConnectionManager) -> None:
    """A card.* event from another publisher whose payload is not a card is acked and left out of the trail."""
    bus = await EventBus(shipkit_connection, source="someone-else").connect()
    async with run_service(service, shipkit_connection):
        await bus.emit("card.archived", {"note": "not a card"})
        await bus.emit("card.created", {"id": 9, "title": "from elsewhere", "column": "todo"})
        entries = await trail.wait_for(1)
    assert [(e.event_type, e.card.id) for e in entries] == [("card.created", 9)]


async def test_client_script_tour_and_commands(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m examples.kanban.client`` runs the tour (exit 0); a single failing command exits 1."""
    async with run_service(service, shipkit_connection):
        assert await kanban_client.main(["--nats-url", shipkit_nats_url]) == 0
        tour = capsys.readouterr().out
        assert await kanban_client.main(["--nats-url", shipkit_nats_url, "move", "3", "done"]) == 0
        assert '< {"id":3,"title":"Ship 1.0","column":"done"}' in capsys.readouterr().out
        assert await kanban_client.main(["--nats-url", shipkit_nats_url, "get", "999"]) == 1
        assert "< error 404: card 999 not found" in capsys.readouterr().out
    assert '< [{"id":3,"title":"Ship 1.0","column":"todo"}]' in tour
    assert "< error 400: invalid payload: title" in tour


async def test_client_script_without_service_says_how_to_start_it(
    shipkit_nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no kanban service running the client exits 1 and tells how to start it."""
    assert await kanban_client.main(["--nats-url", shipkit_nats_url, "list"]) == 1
    assert "shipkit run examples.kanban.app:service" in capsys.readouterr().err


def test_demo_script_runs_end_to_end() -> None:
    """``python -m examples.kanban.demo`` exits 0 after printing replies, both errors and the audit trail."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.kanban.demo"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert '< {"id":1,"title":"Write the README","column":"doing"}' in out
    assert "< error 404: card 999 not found" in out
    assert "< error 400: invalid payload: title" in out
    audit = re.findall(r"^  (card\.\w+) +#(\d) .* correlation_id=([0-9a-f]{8})$", out, re.MULTILINE)
    assert [(kind, card) for kind, card, _ in audit] == [
        ("card.created", "1"),
        ("card.created", "2"),
        ("card.created", "3"),
        ("card.moved", "1"),
        ("card.moved", "2"),
    ]
    requested = re.findall(r"^> kanban\.(?:create|move) .*correlation_id=([0-9a-f]{8})\)$", out, re.MULTILINE)
    assert [correlation for _, _, correlation in audit] == requested[:5]  # the 6th create failed: no event
    assert "nats micro info kanban: version 1.0.0, endpoints create, move, get, list, audit" in out


async def test_shipkit_run_serves_the_kanban_example(shipkit_nats_url: str, shipkit_client: Client) -> None:
    """``shipkit run examples.kanban.app:service`` answers requests and stops cleanly on SIGTERM."""
    process = ShipkitProcess(
        await asyncio.create_subprocess_exec(
            *SHIPKIT_CLI,
            "run",
            "examples.kanban.app:service",
            "--nats-url",
            shipkit_nats_url,
            "--log-format",
            "json",
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    )
    try:
        await process.wait_for_log("service.started")
        card = await shipkit_client.request("kanban.create", {"title": "via shipkit run"}, response_type=Card)
        process.process.terminate()
        assert await process.wait_exit() == 0
    finally:
        await process.kill()
    assert card == Card(id=1, title="via shipkit run", column="todo")
    assert process.logged("shutdown.complete")[0]["failed"] == 0
