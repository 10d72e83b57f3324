"""The stores a runtime hands its handlers: made once per name, even when asked for at once."""

from __future__ import annotations

import asyncio

from shipkit.config import StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.service.resources import ServiceResources


def _resources(connection: ConnectionManager) -> ServiceResources:
    return ServiceResources(connection, source="svc", event_stream=StreamConfig.event_bus(), event_prefix="ship.events")


async def test_concurrent_first_uses_share_one_store(shipkit_connection: ConnectionManager) -> None:
    """Handlers that ask for the same new bucket, queue or bus at once all get the same object."""
    resources = _resources(shipkit_connection)
    kvs = await asyncio.gather(*(resources.kv("shared") for _ in range(5)))
    queues = await asyncio.gather(*(resources.job_queue("work") for _ in range(5)))
    buses = await asyncio.gather(*(resources.event_bus() for _ in range(5)))
    objects = await asyncio.gather(*(resources.objects("files") for _ in range(3)))
    assert len({id(kv) for kv in kvs}) == 1
    assert len({id(queue) for queue in queues}) == 1
    assert len({id(bus) for bus in buses}) == 1
    assert len({id(store) for store in objects}) == 1
    assert await resources.kv("other") is not kvs[0]
    await resources.close_job_queues()
    assert await resources.job_queue("work") is not queues[0]  # closed queues are forgotten: a new one is made
    await resources.close_job_queues()
