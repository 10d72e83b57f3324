"""Every test gets a real nats-server through the shipkit.testing fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from shipkit.server import NatsServer

pytest_plugins = ["shipkit.testing"]


@pytest_asyncio.fixture
async def raw(shipkit_raw_client: Client) -> Client:
    """A plain nats-py client playing the Rust noesis-ship agent."""
    return shipkit_raw_client


@pytest_asyncio.fixture
async def raw_js(shipkit_raw_client: Client) -> JetStreamContext:
    """The raw client's JetStream context."""
    return shipkit_raw_client.jetstream()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server shared by a whole test module (its tests use distinct names to stay apart)."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("module-store"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
