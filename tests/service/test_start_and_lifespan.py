"""Runtime start: the lifespan's argument, and subscriptions known to the server when start() returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import pytest
from nats.aio.msg import Msg

from shipkit import ConnectionManager, Context, Service
from shipkit.config import NatsConfig
from shipkit.errors import StartupInterruptedError
from shipkit.primitives.kv import KvStore
from shipkit.service.runtime import Runtime, RuntimeState
from shipkit.testing import run_service


async def test_lifespan_taking_context_reaches_the_service_connection(
    shipkit_connection: ConnectionManager,
) -> None:
    """A lifespan whose parameter is annotated Context gets one on the runtime's connection and KV."""
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(ctx: Context) -> AsyncIterator[None]:
        store = await ctx.kv("lifespan_state")
        await store.put("phase", "started")
        seen.append(f"enter:{ctx.service_name}:{ctx.connection is shipkit_connection}")
        yield
        await store.put("phase", "stopped")
        seen.append("exit")

    service = Service("withctx", lifespan=lifespan)

    @service.handler("phase")
    async def phase(ctx: Context) -> str:
        store = await ctx.kv("lifespan_state")
        return str(await store.get("phase"))

    @service.on_shutdown
    async def goodbye() -> None:
        seen.append("shutdown-hook")

    async with run_service(service, shipkit_connection):
        reply = await shipkit_connection.request("withctx.phase", b"", timeout_s=5)
    assert reply.data == b"started"
    assert seen == ["enter:withctx:True", "shutdown-hook", "exit"]
    store = await KvStore("lifespan_state", shipkit_connection).connect()
    assert await store.get("phase") == "stopped"


async def test_lifespan_taking_service_still_gets_the_service(shipkit_connection: ConnectionManager) -> None:
    """A lifespan with an unannotated (or Service-annotated) parameter keeps receiving the Service."""
    received: list[object] = []

    @asynccontextmanager
    async def lifespan(app: Service) -> AsyncIterator[None]:
        received.append(app)
        yield

    service = Service("plain", lifespan=lifespan)
    async with run_service(service, shipkit_connection):
        pass
    assert received == [service]
    assert not service.lifespan_wants_context


async def test_subscriptions_are_known_to_the_server_when_start_returns(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """A request from another connection right after start() is answered, even with a busy write queue.

    nats-py's flush() lets its PING overtake queued SUBs; a startup hook that leaves a large
    publish in the queue made about one start in five answer "no responders" before the fix.
    """
    service = Service("eager")

    @service.handler("ping")
    async def ping() -> str:
        return "pong"

    @service.on_startup
    async def fill_write_queue(ctx: Context) -> None:
        await ctx.connection.client.publish("nobody.listens", b"x" * 1_000_000)

    other = await nats.connect(shipkit_nats_url)
    replies: list[bytes] = []
    try:
        for _ in range(20):
            async with run_service(service, shipkit_connection):
                msg: Msg = await other.request("eager.ping", b"", timeout=5)
                replies.append(msg.data)
    finally:
        await other.close()
    assert replies == [b"pong"] * 20


async def test_exit_requested_while_connecting_stops_at_once() -> None:
    """request_exit() (a signal) while the first connection hangs ends serve() with StartupInterruptedError."""
    accepted = asyncio.Event()

    async def on_connect(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        accepted.set()  # never says INFO: the connect would wait for its deadline

    silent = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        url = f"nats://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
        runtime = Runtime(Service("early"), NatsConfig(url=url, connect_timeout_s=30))
        serving = asyncio.create_task(runtime.serve())
        await asyncio.wait_for(accepted.wait(), 5)
        runtime.request_exit()
        with pytest.raises(StartupInterruptedError, match="while connecting or provisioning"):
            await asyncio.wait_for(serving, 3)
        assert runtime.state is RuntimeState.STOPPED
        assert not runtime.connection.is_connected
    finally:
        silent.close()
