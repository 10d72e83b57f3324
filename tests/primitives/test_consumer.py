"""DurableConsumer across a single-server restart: it resumes on the reconnect, not after missed heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.primitives.consumer import DurableConsumer
from shipkit.server import NatsServer


async def test_consumer_resumes_right_after_a_server_crash(shipkit_server: NatsServer) -> None:
    """After a crash and restart the consumer takes new messages within a heartbeat, not after two missed ones."""
    config = NatsConfig(url=shipkit_server.url, reconnect_time_wait_s=0.1, request_timeout_s=2)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(msg: Any) -> None:
        await received.put(msg.data)

    async with ConnectionManager(config) as conn, ConnectionManager(config) as publisher:
        await conn.ensure_stream(StreamConfig.new("RESUME", "resume.>"))
        consumer = DurableConsumer(
            conn, stream="RESUME", filter_subject="resume.>", durable="r", handler=handler, heartbeat_s=5.0
        )
        await consumer.start()
        try:
            await publisher.jetstream.publish("resume.a", b"before")
            assert await asyncio.wait_for(received.get(), 5) == b"before"
            back = asyncio.Event()
            conn.on_reconnect(_setter(back))
            # SIGKILL: no "server shutdown" status reaches the consumer, only the reconnect tells it
            await asyncio.to_thread(shipkit_server.kill)
            await asyncio.to_thread(shipkit_server.start)
            await asyncio.wait_for(back.wait(), 10)
            loop = asyncio.get_running_loop()
            answered = loop.time()
            await asyncio.wait_for(publisher.jetstream.publish("resume.a", b"after"), 10)
            # Within one heartbeat of the reconnect: the stale-pull watchdog alone would take two.
            # "before" may come again first: its ack can die with the server (at-least-once).
            seen = await asyncio.wait_for(_until(received, b"after"), 4.5)
            assert set(seen) <= {b"before"}, seen
            assert loop.time() - answered < 4.5
        finally:
            await consumer.stop()


async def _until(received: asyncio.Queue[bytes], wanted: bytes) -> list[bytes]:
    """Read ``received`` until ``wanted`` arrives; what came before it."""
    before: list[bytes] = []
    while (data := await received.get()) != wanted:
        before.append(data)
    return before


def _setter(event: asyncio.Event) -> Any:
    """A reconnect listener that sets ``event``."""

    async def listener() -> None:
        event.set()

    return listener
