"""Every test gets a real nats-server through the shipkit.testing fixtures."""

from __future__ import annotations

import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

pytest_plugins = ["shipkit.testing"]


@pytest_asyncio.fixture
async def raw(shipkit_raw_client: Client) -> Client:
    """A plain nats-py client playing the Rust noesis-ship agent."""
    return shipkit_raw_client


@pytest_asyncio.fixture
async def raw_js(shipkit_raw_client: Client) -> JetStreamContext:
    """The raw client's JetStream context."""
    return shipkit_raw_client.jetstream()
