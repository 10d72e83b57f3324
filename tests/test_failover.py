"""shipkit._failover on a real 3-node cluster: publishes ride through a killed leader, nothing lost or doubled.

One cluster serves the whole module; each test that kills a node restarts it before it ends,
so the next test starts with three nodes again. Elections take seconds: kept to one per test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from shipkit import ShipEvent
from shipkit._failover import publish_acked, stream_captures
from shipkit.config import KvBucketConfig, NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import ClusterUnavailableError, StreamNotFoundError
from shipkit.jobs import JobContext, JobQueue
from shipkit.primitives.eventbus import EventBus
from shipkit.primitives.kv import KvStore
from shipkit.service.app import Service
from shipkit.service.client import Client
from shipkit.testing import NatsCluster, run_service


def cluster_config(cluster: NatsCluster, **options: Any) -> NatsConfig:
    """A config listing every node, quick to reconnect, failing over within 20 s."""
    defaults: dict[str, Any] = {"reconnect_time_wait_s": 0.1, "request_timeout_s": 2.0, "failover_timeout_s": 20.0}
    return NatsConfig(servers=cluster.urls, **{**defaults, **options})


@pytest_asyncio.fixture
async def conn(shipkit_cluster: NatsCluster) -> AsyncIterator[ConnectionManager]:
    """A connection to the cluster that provisions everything at R3."""
    async with ConnectionManager(cluster_config(shipkit_cluster, replicas=3)) as manager:
        yield manager


@pytest_asyncio.fixture
async def observer(shipkit_cluster: NatsCluster) -> AsyncIterator[NatsClient]:
    """A plain nats-py client on all nodes, to look at what the cluster holds."""
    nc = await nats.connect(servers=shipkit_cluster.urls, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    try:
        yield nc
    finally:
        await nc.close()


async def stream_info(nc: NatsClient, stream: str) -> dict[str, Any]:
    """The raw STREAM.INFO answer for ``stream``."""
    msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


async def kill_leader_after(
    cluster: NatsCluster, observer: NatsClient, stream: str, ready: asyncio.Event
) -> tuple[int, float]:
    """Once ``ready`` is set, SIGKILL the node leading ``stream``; its index and the loop time of the kill."""
    await asyncio.wait_for(ready.wait(), 30)
    leader = await cluster.stream_leader(observer, stream)
    await asyncio.to_thread(cluster.kill, leader)
    return leader, asyncio.get_running_loop().time()


async def test_events_ride_through_a_killed_stream_leader(
    shipkit_cluster: NatsCluster, conn: ConnectionManager, observer: NatsClient
) -> None:
    """Events emitted while the R3 stream's leader is killed are all stored, once each; none says 'not found'."""
    bus = EventBus(conn, stream=StreamConfig.event_bus("FO_EVENTS", "fo.events"), prefix="fo.events")
    await bus.connect()
    assert (await stream_info(observer, "FO_EVENTS"))["config"]["num_replicas"] == 3
    total, halfway = 300, asyncio.Event()

    async def emit_all() -> None:
        for i in range(total):
            await bus.emit("tick", {"i": i})
            if i == total // 3:
                halfway.set()

    killer = asyncio.create_task(kill_leader_after(shipkit_cluster, observer, "FO_EVENTS", halfway))
    try:
        await asyncio.wait_for(emit_all(), 60)  # raises StreamNotFoundError/ClusterUnavailableError if not ridden
        leader, _ = await killer
    finally:
        for index, node in enumerate(shipkit_cluster.nodes):
            if not node.is_running:
                await asyncio.to_thread(shipkit_cluster.restart, index)
    assert (await stream_info(observer, "FO_EVENTS"))["state"]["messages"] == total  # none lost, none doubled
    assert await shipkit_cluster.stream_leader(observer, "FO_EVENTS") in range(3)
    assert leader in range(3)


async def test_missing_stream_is_not_found_at_once(conn: ConnectionManager) -> None:
    """A publish no stream captures is StreamNotFoundError without waiting out the failover deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StreamNotFoundError, match=r"no stream captures subject 'nowhere\.x'"):
        await publish_acked(conn, "nowhere.x", b"{}")
    assert loop.time() - started < conn.config.failover_timeout_s / 2
    assert await stream_captures(conn, "nowhere.x") is False


async def test_service_provisions_everything_at_r3_and_jobs_survive_a_node_loss(
    shipkit_cluster: NatsCluster, observer: NatsClient
) -> None:
    """Service(replicas=3) makes every stream and bucket R3; jobs across a killed node each complete once, right."""
    service = Service("fleet", replicas=3)
    seen_seven = asyncio.Event()

    @service.handler("ping")
    async def ping(payload: dict[str, Any]) -> dict[str, Any]:
        return {"pong": payload["n"]}

    @service.on_event("fleet.*")
    async def on_fleet(event: ShipEvent) -> None: ...

    @service.kv_watch("fleet_state")
    async def on_state(value: Any) -> None:
        if value["n"] == 7:
            seen_seven.set()

    @service.on_channel("ops")
    async def on_ops(message: Any) -> None: ...

    @service.job_worker("double")
    async def double(payload: dict[str, int], job: JobContext) -> dict[str, int]:
        return {"out": payload["n"] * 2}

    config = cluster_config(shipkit_cluster)
    async with run_service(service, config) as runtime:
        for stream in ("SHIP_EVENTS", "CHANNELS", "KV_fleet_state", "KV_JOBS_jobs", "JOBS_jobs_DISPATCH"):
            info = await stream_info(observer, stream)
            assert info["config"]["num_replicas"] == 3, (stream, info)
        queue: JobQueue[Any] = JobQueue(runtime.connection)
        await queue.connect()
        client = Client(runtime.connection)
        kv = await KvStore(KvBucketConfig(bucket="fleet_state"), runtime.connection).connect()
        try:
            ids = [await queue.submit({"n": n}, "double") for n in range(20)]
            leader = await shipkit_cluster.stream_leader(observer, "JOBS_jobs_DISPATCH")
            await asyncio.to_thread(shipkit_cluster.kill, leader)
            ids += [await queue.submit({"n": n}, "double") for n in range(20, 30)]
            ids += await queue.submit_many([{"n": n} for n in range(30, 40)], "double")  # pipelined, mid-election
            await kv.put("x", {"n": 7})
            assert (await client.request("fleet.ping", {"n": 3}, timeout_s=20)) == {"pong": 3}
            for n, job_id in enumerate(ids):
                job = await _wait_complete(queue, job_id)
                assert job.result == {"out": n * 2}
            await asyncio.wait_for(seen_seven.wait(), 20)
        finally:
            await kv.close()
            await queue.close()
            for index, node in enumerate(shipkit_cluster.nodes):
                if not node.is_running:
                    await asyncio.to_thread(shipkit_cluster.restart, index)


async def _wait_complete(queue: JobQueue[Any], job_id: str) -> Any:
    """The job once it completed (bounded: 30 s through an election)."""
    from shipkit.jobs import JobState

    async def done() -> Any:
        while True:
            job = await queue.get(job_id)
            if job is not None and job.state is JobState.COMPLETE:
                return job
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(done(), 30)


def test_cluster_unavailable_is_transient_and_not_a_missing_stream() -> None:
    """ClusterUnavailableError is a JetStreamError that is not StreamNotFoundError."""
    assert not issubclass(ClusterUnavailableError, StreamNotFoundError)


async def test_retry_transient_gives_up_with_cluster_unavailable() -> None:
    """A failure that stays transient past the deadline becomes ClusterUnavailableError, chained to it."""
    from shipkit._failover import retry_transient
    from shipkit.errors import NatsTimeoutError

    calls = 0

    async def always_times_out() -> None:
        nonlocal calls
        calls += 1
        raise NatsTimeoutError("no ack")

    with pytest.raises(ClusterUnavailableError, match="no leader / cluster unavailable") as info:
        await retry_transient("publish x", always_times_out, 0.3)
    assert calls > 1
    assert isinstance(info.value.__cause__, NatsTimeoutError)


async def test_a_repeated_msg_id_is_stored_once(shipkit_connection: ConnectionManager) -> None:
    """Two publishes with one Nats-Msg-Id (a retry whose ack was lost) store one message."""
    await shipkit_connection.ensure_stream(StreamConfig.new("DEDUPE", "dedupe.>"))
    first = await publish_acked(shipkit_connection, "dedupe.a", b"1", msg_id="same")
    second = await publish_acked(shipkit_connection, "dedupe.a", b"1", msg_id="same")
    assert second.get("duplicate") is True
    assert first["seq"] == second["seq"]
    info = await shipkit_connection.jetstream.stream_info("DEDUPE")
    assert info.state.messages == 1
