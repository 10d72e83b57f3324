"""Streamed handler replies end to end: chunks, errors, cancellation, backpressure, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from pydantic import BaseModel

from shipkit import Client, ConnectionManager, Context, NatsConfig, Service, ServiceError
from shipkit.errors import ConfigurationError, NatsTimeoutError
from shipkit.server import NatsServer
from shipkit.service.endpoint import ERROR_CODE_HEADER
from shipkit.service.streaming import FLUSH_AT_BYTES, STREAM_HEADER
from shipkit.testing import run_service


class Token(BaseModel):
    index: int
    text: str


@pytest.fixture(scope="module")
def server(module_server: NatsServer) -> NatsServer:
    """The module's shared server."""
    return module_server


@pytest_asyncio.fixture
async def connection(server: NatsServer) -> AsyncIterator[ConnectionManager]:
    manager = ConnectionManager(NatsConfig.from_url(server.url, request_timeout_s=5.0))
    await manager.connect()
    try:
        yield manager
    finally:
        await manager.close()


class Probe:
    """Events a handler sets so a test can wait on them (bounded) instead of sleeping."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.release = asyncio.Event()
        self.max_pending = 0


def make_service(name: str, probe: Probe) -> Service:
    service = Service(name)

    @service.handler("tokens")
    async def tokens(count: int) -> AsyncIterator[Token]:
        for index in range(count):
            yield Token(index=index, text=f"t{index}")

    @service.handler("words")
    async def words() -> AsyncIterator[str]:
        yield "hello"
        yield "world"

    @service.handler("nothing")
    async def nothing() -> AsyncIterator[str]:
        return
        yield  # an async generator that yields nothing

    @service.handler("early")
    async def early() -> AsyncIterator[str]:
        raise ServiceError(422, "cannot start")
        yield  # pragma: no cover

    @service.handler("midway")
    async def midway() -> AsyncIterator[str]:
        yield "one"
        raise RuntimeError("broke after one")

    @service.handler("endless")
    async def endless() -> AsyncIterator[int]:
        probe.started.set()
        try:
            index = 0
            while True:
                yield index
                index += 1
                await probe.release.wait()
        finally:
            probe.closed.set()

    @service.handler("big")
    async def big(count: int, ctx: Context) -> AsyncIterator[bytes]:
        nc = ctx.connection.client
        for _ in range(count):
            probe.max_pending = max(probe.max_pending, nc.pending_data_size)
            yield b"x" * 1024

    @service.handler("plain")
    async def plain() -> dict[str, Any]:
        return {"ok": True}

    return service


async def collect(chunks: AsyncIterator[Any], into: list[Any]) -> None:
    """Append every chunk to ``into`` (what was received stays visible when the stream raises)."""
    async for chunk in chunks:
        into.append(chunk)


async def test_typed_chunks_and_one_request_in_stats(connection: ConnectionManager) -> None:
    """Every yielded model arrives typed, in order, and the stream counts as one request."""
    async with run_service(make_service("s1", Probe()), connection) as runtime:
        client = Client(connection)
        got = [t async for t in client.stream("s1.tokens", 5, response_type=Token)]
        endpoint = next(e for e in runtime.endpoints if e.name == "tokens")
        assert endpoint.num_requests == 1 and endpoint.num_errors == 0 and endpoint.processing_time_ns > 0
    assert got == [Token(index=i, text=f"t{i}") for i in range(5)]


async def test_str_chunks_nothing_and_plain_handler(connection: ConnectionManager) -> None:
    """Strings stream as text, an empty generator is an empty stream, an ordinary reply is one chunk."""
    async with run_service(make_service("s2", Probe()), connection):
        client = Client(connection)
        assert [w async for w in client.stream("s2.words", response_type=str)] == ["hello", "world"]
        assert [x async for x in client.stream("s2.nothing")] == []
        assert [x async for x in client.stream("s2.plain")] == [{"ok": True}]


async def test_error_before_first_chunk_is_the_usual_error(connection: ConnectionManager) -> None:
    """A generator failing before its first chunk answers like a failing handler: one error reply."""
    async with run_service(make_service("s3", Probe()), connection):
        client = Client(connection)
        with pytest.raises(ServiceError) as caught:
            await client.request("s3.early")
        assert caught.value.code == 422
        with pytest.raises(ServiceError) as streamed:
            [x async for x in client.stream("s3.early")]
        assert streamed.value.code == 422


async def test_error_mid_stream_sends_error_then_terminator(connection: ConnectionManager) -> None:
    """After a chunk, a failure is an error message followed by the terminator (seen raw)."""
    async with run_service(make_service("s4", Probe()), connection):
        nc = connection.client
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("s4.midway", b"", reply=inbox)
        first = await sub.next_msg(timeout=5)
        error = await sub.next_msg(timeout=5)
        terminator = await sub.next_msg(timeout=5)
        assert first.data == b"one" and STREAM_HEADER in (first.headers or {})
        assert (error.headers or {})[ERROR_CODE_HEADER] == "500"
        assert terminator.data == b"" and not terminator.headers
        received: list[str] = []
        with pytest.raises(ServiceError, match="broke after one"):
            await collect(Client(connection).stream("s4.midway", response_type=str), received)
        assert received == ["one"]


async def test_break_closes_the_generator(connection: ConnectionManager) -> None:
    """Leaving the loop early reaches the handler: its generator's finally runs, counted cancelled."""
    probe = Probe()
    async with run_service(make_service("s5", probe), connection) as runtime:
        async with contextlib.aclosing(Client(connection).stream("s5.endless")) as chunks:
            async for value in chunks:
                assert value == 0
                break
        await asyncio.wait_for(probe.closed.wait(), 5)
    assert runtime.counts.cancelled == 1  # shutdown waited for the stream's task to settle


async def test_inactivity_timeout_raises_and_cancels(connection: ConnectionManager) -> None:
    """A silent handler times the caller out, and the caller's timeout closes the generator."""
    probe = Probe()
    async with run_service(make_service("s6", probe), connection):
        with pytest.raises(NatsTimeoutError):
            async for _ in Client(connection).stream("s6.endless", inactivity_timeout_s=0.3):
                pass
        await asyncio.wait_for(probe.closed.wait(), 5)


async def test_cancelled_task_closes_the_generator(connection: ConnectionManager) -> None:
    """Cancelling the caller's task mid-stream closes the handler's generator."""
    probe = Probe()
    async with run_service(make_service("s7", probe), connection):

        async def consume() -> None:
            async for _ in Client(connection).stream("s7.endless"):
                pass

        task = asyncio.create_task(consume())
        await asyncio.wait_for(probe.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(probe.closed.wait(), 5)


async def test_backpressure_bounds_the_outgoing_buffer(connection: ConnectionManager) -> None:
    """A generator producing faster than the socket never finds more than the flush bound buffered."""
    probe = Probe()
    service = make_service("s8", probe)
    async with run_service(service, connection):
        total = 0
        async for chunk in Client(connection).stream("s8.big", 3000, response_type=bytes):
            total += len(chunk)
    assert total == 3000 * 1024
    assert 0 < probe.max_pending <= FLUSH_AT_BYTES + 2 * 1024  # nats-py alone lets it reach 2 MiB


async def test_shutdown_mid_stream_ends_with_503(connection: ConnectionManager) -> None:
    """Shutting down mid-stream sends the caller a 503 and the terminator, never a hang."""
    probe = Probe()
    received: list[int] = []
    async with run_service(make_service("s9", probe), connection, graceful_timeout_s=0.2):
        chunks = Client(connection).stream("s9.endless")
        received.append(await anext(chunks))
    with pytest.raises(ServiceError) as caught:
        await collect(chunks, received)
    assert caught.value.code == 503 and received == [0]
    assert probe.closed.is_set()


async def test_raw_caller_sees_header_then_terminator(server: NatsServer) -> None:
    """A plain nats-py caller gets each chunk and an empty headerless terminator; the header is extra."""
    nc = await nats.connect(server.url)
    try:
        async with run_service(make_service("s10", Probe()), server.url):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("s10.words", b"", reply=inbox)
            messages = [await sub.next_msg(timeout=5) for _ in range(3)]
    finally:
        await nc.close()
    assert [m.data for m in messages] == [b"hello", b"world", b""]
    assert (messages[0].headers or {}).get(STREAM_HEADER, "").startswith("_SHIPKIT.cancel.")
    assert not messages[1].headers and not messages[2].headers


def test_streaming_handler_cannot_declare_a_mutation() -> None:
    """A mutation needs one reply; a streaming handler declaring one is refused at registration."""
    service = Service("s11")

    async def gen() -> AsyncIterator[str]:
        yield "x"

    with pytest.raises(ConfigurationError, match="streaming handler"):
        service.add_handler("gen", gen, mutation="thing.done")
