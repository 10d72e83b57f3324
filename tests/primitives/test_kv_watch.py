"""The KV watch across a server crash: it restarts after the last seen revision, no gap and no repeat."""

from __future__ import annotations

import asyncio

from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.primitives.kv import KvStore
from shipkit.server import NatsServer


async def test_watch_resumes_after_a_crash_without_gap_or_duplicate(shipkit_server: NatsServer) -> None:
    """Revisions written before and after a SIGKILLed server restart each reach the watch exactly once."""
    config = NatsConfig(url=shipkit_server.url, reconnect_time_wait_s=0.1, request_timeout_s=2)
    watcher = await KvStore(KvBucketConfig(bucket="resume"), config).connect()
    writer = await KvStore(KvBucketConfig(bucket="resume"), NatsConfig(url=shipkit_server.url)).connect()
    revisions: list[int] = []
    try:
        async with watcher.watch(initial=False) as watch:
            for n in range(3):
                await writer.put("k", n)
            async for entry in watch:
                revisions.append(entry.revision)
                if len(revisions) == 3:
                    break
            back = asyncio.Event()

            async def on_back() -> None:
                back.set()

            watcher.connection.on_reconnect(on_back)
            await asyncio.to_thread(shipkit_server.kill)
            await asyncio.to_thread(shipkit_server.start)
            await asyncio.wait_for(back.wait(), 10)
            for n in range(3, 6):
                await writer.put("k", n)

            async def rest() -> None:
                async for entry in watch:
                    revisions.append(entry.revision)
                    if len(revisions) == 6:
                        return

            await asyncio.wait_for(rest(), 10)
    finally:
        await writer.close()
        await watcher.close()
    assert revisions == [1, 2, 3, 4, 5, 6]
