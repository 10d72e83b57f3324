"""Test helpers: a real embedded NATS server per test, and the runtime started in-process.

Opt in from a ``conftest.py``::

    pytest_plugins = ["shipkit.testing"]

Fixtures (all prefixed ``shipkit_``):

- ``shipkit_server``: a fresh :class:`~shipkit.server.NatsServer` with JetStream for each test,
  on its own port and store directory, stopped when the test ends (also when it fails).
- ``shipkit_nats_url``: that server's URL.
- ``shipkit_config``: a :class:`~shipkit.config.NatsConfig` for it.
- ``shipkit_connection``: a connected :class:`~shipkit.connection.ConnectionManager`.
- ``shipkit_client``: a :class:`~shipkit.service.client.Client` on that connection.
- ``shipkit_raw_client``: a plain nats-py client on the same server, to play another agent (a
  noesis-ship peer, a NATS CLI user) or to read raw bytes in interop tests.
- ``shipkit_cluster``: a 3-node JetStream :class:`~shipkit._cluster.NatsCluster` shared by the
  tests of one module (a start costs a second or two), with ``kill``/``restart``/``stream_leader``
  helpers; every node is stopped after the module, also when a test fails. A test that kills a
  node restarts it before it ends.

And :func:`run_service`, which starts a service's runtime in-process against a real server::

    async def test_create(shipkit_connection, shipkit_client):
        async with run_service(service, shipkit_connection):
            item = await shipkit_client.request("kanban.create", {"title": "x"})

And :func:`run_job`, which runs one job worker function with a real ``JobContext``
(progress, checkpoints, ``resume_from``, retries) on a throw-away queue of the test's server::

    async def test_train(shipkit_connection):
        job = await run_job(train, {"epochs": 3}, shipkit_connection, resume_from={"epoch": 2})
        assert job.result == {"epochs_run": 1}

A server starts in a few tens of milliseconds, so isolation per test costs little and tests
never share streams or buckets by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from shipkit._cluster import NatsCluster
from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager, ProvisionMode
from shipkit.jobs.testing import run_job
from shipkit.server import NatsServer
from shipkit.service.app import Service
from shipkit.service.client import Client
from shipkit.service.runtime import Runtime

__all__ = [
    "NatsCluster",
    "run_job",
    "run_service",
    "shipkit_client",
    "shipkit_cluster",
    "shipkit_config",
    "shipkit_connection",
    "shipkit_nats_url",
    "shipkit_raw_client",
    "shipkit_server",
]


@pytest.fixture
def shipkit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server for one test; always stopped afterwards."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats-store"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def shipkit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster on loopback for one test module; always stopped afterwards."""
    with NatsCluster(3, store_dir=tmp_path_factory.mktemp("nats-cluster")) as cluster:
        yield cluster


@pytest.fixture
def shipkit_nats_url(shipkit_server: NatsServer) -> str:
    """The URL of this test's server."""
    return shipkit_server.url


@pytest.fixture
def shipkit_config(shipkit_nats_url: str) -> NatsConfig:
    """A :class:`NatsConfig` pointing at this test's server."""
    return NatsConfig.from_url(shipkit_nats_url, name="shipkit-test", request_timeout_s=5.0)


@pytest_asyncio.fixture
async def shipkit_connection(shipkit_config: NatsConfig) -> AsyncIterator[ConnectionManager]:
    """A connected :class:`ConnectionManager` for this test's server; disconnected afterwards."""
    manager = ConnectionManager(shipkit_config)
    await manager.connect()
    try:
        yield manager
    finally:
        await manager.close()


@pytest_asyncio.fixture
async def shipkit_client(shipkit_connection: ConnectionManager) -> Client:
    """A :class:`Client` on this test's connection."""
    return Client(shipkit_connection)


@pytest_asyncio.fixture
async def shipkit_raw_client(shipkit_nats_url: str) -> AsyncIterator[NatsClient]:
    """A plain nats-py client on this test's server; closed afterwards."""
    nc = await nats.connect(shipkit_nats_url)
    try:
        yield nc
    finally:
        await nc.close()


@asynccontextmanager
async def run_service(
    service: Service,
    connection: ConnectionManager | NatsConfig | str | None = None,
    *,
    graceful_timeout_s: float = 5.0,
    provision: ProvisionMode = "create",
) -> AsyncIterator[Runtime]:
    """Start ``service`` in-process (no signal handlers) and shut it down in order on exit.

    Yields the :class:`Runtime`, whose ``connection``, ``counts`` and ``endpoints`` tests can inspect.
    """
    runtime = Runtime(service, connection, graceful_timeout_s=graceful_timeout_s, provision=provision)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.shutdown()
