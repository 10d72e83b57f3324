"""Runtime start: the lifespan's argument, and subscriptions known to the server when start() returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.aio.msg import Msg

from shipkit import ConnectionManager, Context, Service
from shipkit.primitives.kv import KvStore
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
