"""Request-reply handlers end to end on a real server: decoding, replies, the error contract."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from pydantic import BaseModel

from shipkit import Client, ConnectionManager, Context, Event, Service, ServiceError
from shipkit.testing import run_service


class Item(BaseModel):
    title: str
    count: int = 0


def make_service() -> Service:
    service = Service("kanban", "1.2.3", "test kanban")

    @service.handler("create")
    async def create(item: Item) -> Item:
        return Item(title=item.title.upper(), count=item.count + 1)

    @service.handler("item.rename")
    async def rename(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"subject": ctx.subject, "correlation_id": ctx.correlation_id, **data}

    @service.handler("echo")
    async def echo(data: bytes) -> bytes:
        return data

    @service.handler("boom")
    async def boom() -> None:
        raise RuntimeError("kaboom\nwith a second line")

    @service.handler("teapot")
    async def teapot() -> None:
        raise ServiceError(418, "I am a teapot")

    return service


async def test_model_in_model_out(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """A pydantic request is validated and the returned model is encoded as JSON."""
    async with run_service(make_service(), shipkit_connection):
        reply = await shipkit_client.request("kanban.create", {"title": "a", "count": 1}, response_type=Item)
    assert reply == Item(title="A", count=2)


async def test_dotted_command_and_context(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """A dotted command routes under the prefix; ctx carries subject and the caller's correlation id."""
    async with run_service(make_service(), shipkit_connection):
        reply = await shipkit_client.request("kanban.item.rename", {"x": 1}, correlation_id="c0ffee00")
    assert reply == {"subject": "kanban.item.rename", "correlation_id": "c0ffee00", "x": 1}


async def test_bytes_round_trip_unchanged(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """bytes in and out are passed through untouched (the seed's handler shape)."""
    async with run_service(make_service(), shipkit_connection):
        assert await shipkit_client.request("kanban.echo", b"\x00\xffraw", response_type=bytes) == b"\x00\xffraw"


async def test_validation_failure_is_400_with_headers_and_seed_body(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """A payload failing validation gets 400 with micro headers, the seed body and the field errors."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(make_service(), shipkit_connection):
            msg = await nc.request("kanban.create", b'{"count":"many"}', timeout=5)
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert "title" in msg.headers["Nats-Service-Error"]
    body = json.loads(msg.data)
    assert list(body)[:2] == ["error", "code"]
    assert body["code"] == 400
    assert {tuple(d["loc"]) for d in body["details"]} == {("title",), ("count",)}


async def test_malformed_json_is_400_not_a_timeout(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """Bytes that are not JSON are answered with 400, never left to time out."""
    async with run_service(make_service(), shipkit_connection):
        with pytest.raises(ServiceError) as caught:
            await shipkit_client.request("kanban.create", b"{not json", timeout_s=5)
    assert caught.value.code == 400
    assert "invalid" in caught.value.message.lower()


async def test_raising_handler_is_500_one_line(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """An unexpected exception becomes a 500 reply with a one-line message and no traceback."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(make_service(), shipkit_connection):
            msg = await nc.request("kanban.boom", b"", timeout=5)
    finally:
        await nc.close()
    assert msg.headers == {"Nats-Service-Error": "RuntimeError: kaboom", "Nats-Service-Error-Code": "500"}
    assert msg.data == b'{"error":"RuntimeError: kaboom","code":500}'


async def test_service_error_keeps_its_code(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """ServiceError(code, message) raised by a handler reaches the caller as that code."""
    async with run_service(make_service(), shipkit_connection):
        with pytest.raises(ServiceError) as caught:
            await shipkit_client.request("kanban.teapot")
    assert (caught.value.code, caught.value.message) == (418, "I am a teapot")


async def test_unknown_command_is_seed_404(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """An unknown command gets the seed's exact UNKNOWN_COMMAND body."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(make_service(), shipkit_connection):
            msg = await nc.request("kanban.nope", b"", timeout=5)
    finally:
        await nc.close()
    assert msg.data == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "404"


async def test_default_handler_gets_full_subject(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Named handlers win; other commands go to the default handler with the full subject."""
    service = Service("disp")

    @service.handler("named")
    async def named() -> str:
        return "named"

    @service.default_handler
    async def fallback(subject: str, payload: bytes) -> bytes:
        return subject.encode() + b"|" + payload

    async with run_service(service, shipkit_connection):
        assert await shipkit_client.request("disp.named", response_type=str) == "named"
        assert await shipkit_client.request("disp.other.cmd", b"p", response_type=bytes) == b"disp.other.cmd|p"


async def test_handlers_run_concurrently(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Suspended handlers run at the same time (all must be inside before any may leave)."""
    service = Service("conc")
    inside = 0
    all_inside = asyncio.Event()

    @service.handler("wait")
    async def wait() -> int:
        nonlocal inside
        inside += 1
        if inside == 5:
            all_inside.set()
        await asyncio.wait_for(all_inside.wait(), timeout=5)
        return inside

    async with run_service(service, shipkit_connection):
        results = await asyncio.gather(*(shipkit_client.request("conc.wait") for _ in range(5)))
    assert results == [5] * 5


async def test_max_concurrency_bounds_in_flight(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """With max_concurrency=2 no more than two handlers are ever inside at once, and none is lost."""
    service = Service("bounded")
    inside = 0
    peak = 0

    @service.handler("work", max_concurrency=2)
    async def work(n: int) -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        inside -= 1
        return n

    async with run_service(service, shipkit_connection):
        results = await asyncio.gather(*(shipkit_client.request("bounded.work", i) for i in range(20)))
    assert sorted(results) == list(range(20))
    assert peak <= 2


async def test_oversized_reply_is_an_error_reply(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """A reply over max_payload becomes a clear 413 error, not a silent drop."""
    service = Service("big")
    size = shipkit_connection.max_payload + 10

    @service.handler("blob")
    async def blob() -> bytes:
        return b"x" * size

    async with run_service(service, shipkit_connection):
        with pytest.raises(ServiceError) as caught:
            await shipkit_client.request("big.blob", timeout_s=5)
    assert caught.value.code == 413
    assert "max_payload" in caught.value.message


async def test_stats_count_requests_and_errors(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Endpoint counters count requests, errors and the last error."""
    async with run_service(make_service(), shipkit_connection) as runtime:
        await shipkit_client.request("kanban.create", {"title": "a"})
        with pytest.raises(ServiceError):
            await shipkit_client.request("kanban.create", {"nope": 1})
        endpoint = next(e for e in runtime.endpoints if e.name == "create")
        assert (endpoint.num_requests, endpoint.num_errors) == (2, 1)
        assert endpoint.last_error.startswith("400: invalid payload")
        assert runtime.counts.handled == 1
        assert runtime.counts.failed == 1


async def test_on_message_envelope_and_reply(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """on_message decodes the pub/sub Event envelope, skips garbage, and replies when asked."""

    service = Service("listener")
    received: asyncio.Queue[Event] = asyncio.Queue()

    @service.on_message("agent1.>")
    async def on_agent(event: Event) -> None:
        await received.put(event)

    @service.on_message("math.double")
    async def double(n: int) -> int:
        return n * 2

    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            await nc.publish("agent1.heartbeat", b"garbage{")
            await nc.publish(
                "agent1.heartbeat",
                b'{"event_type":"heartbeat","source":"agent1","payload":{"ok":true},'
                b'"timestamp":"2026-01-01T00:00:00Z","correlation_id":null}',
            )
            event = await asyncio.wait_for(received.get(), timeout=5)
            reply = await nc.request("math.double", b"21", timeout=5)
    finally:
        await nc.close()
    assert (event.event_type, event.source, event.payload) == ("heartbeat", "agent1", {"ok": True})
    assert reply.data == b"42"


async def test_queue_group_spreads_requests(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """Two instances in the default queue group each answer a request exactly once per request."""
    answered: list[str] = []

    def make(instance: str) -> Service:
        service = Service("pool")

        @service.handler("who")
        async def who() -> str:
            answered.append(instance)
            return instance

        return service

    async with run_service(make("a"), shipkit_connection), run_service(make("b"), shipkit_connection):
        replies = [await shipkit_client.request("pool.who", response_type=str) for _ in range(20)]
    assert len(answered) == 20
    assert sorted(replies) == sorted(answered)


async def test_request_cancelled_at_shutdown_gets_503(
    shipkit_connection: ConnectionManager, shipkit_client: Client
) -> None:
    """A request still running when the grace period ends is answered 503 at once, not left to time out."""
    service = Service("stuck")
    entered = asyncio.Event()

    @service.handler("wait")
    async def wait() -> None:
        entered.set()
        await asyncio.Event().wait()

    async with run_service(service, shipkit_connection, graceful_timeout_s=0.1) as runtime:
        call = asyncio.create_task(shipkit_client.request("stuck.wait", timeout_s=30))
        await asyncio.wait_for(entered.wait(), timeout=5)
    with pytest.raises(ServiceError) as caught:
        await asyncio.wait_for(call, timeout=5)
    assert caught.value.code == 503
    assert runtime.counts.cancelled == 1
