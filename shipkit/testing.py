"""Test helpers: a real embedded NATS server per test, and the runtime started in-process.

Opt in from a ``conftest.py``::

    pytest_plugins = ["shipkit.testing"]

Fixtures (all prefixed ``shipkit_``):

- ``shipkit_server``: a fresh :class:`~shipkit.server.NatsServer` with JetStream for each test,
  on its own port and store directory, stopped when the test ends (also when it fails).
- ``shipkit_nats_url``: that server's URL.
- ``shipkit_config``: a :class:`~shipkit.config.NatsConfig` for it.
- ``shipkit_connection``: a connected :class:`~shipkit.connection.ConnectionManager`.

A server starts in a few tens of milliseconds, so isolation per test costs little and tests
never share streams or buckets by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.server import NatsServer

__all__ = [
    "shipkit_config",
    "shipkit_connection",
    "shipkit_nats_url",
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
        await manager.disconnect()
