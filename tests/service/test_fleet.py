"""Tests for shipkit.service.fleet: several services in one process on one connection."""

from __future__ import annotations

from typing import Any

import pytest

from shipkit import Client, ConnectionManager, Service
from shipkit.config import NatsConfig, StreamConfig
from shipkit.errors import ConfigurationError, ProvisioningError
from shipkit.service.fleet import Fleet


def _echo_service(name: str) -> Service:
    service = Service(name)

    @service.handler("who")
    async def who(payload: dict[str, Any]) -> dict[str, Any]:
        return {"service": name, **payload}

    return service


async def test_services_share_one_connection(shipkit_config: NatsConfig) -> None:
    """Every service of a fleet answers, all on one connection, which the fleet closes at the end."""
    connection = ConnectionManager(shipkit_config)
    fleet = Fleet([_echo_service("alpha"), _echo_service("beta")], connection)
    await fleet.start()
    try:
        assert {id(runtime.connection) for runtime in fleet.runtimes} == {id(connection)}
        client = Client(connection)
        assert await client.request("alpha.who", {"n": 1}) == {"service": "alpha", "n": 1}
        assert await client.request("beta.who", {"n": 2}) == {"service": "beta", "n": 2}
    finally:
        counts = await fleet.shutdown()
    assert counts.handled == 2
    assert not connection.is_connected


def test_duplicate_names_are_refused(shipkit_config: NatsConfig) -> None:
    """Two services with one name in one fleet is a configuration error naming it."""
    with pytest.raises(ConfigurationError, match="gamma"):
        Fleet([_echo_service("gamma"), _echo_service("gamma")], ConnectionManager(shipkit_config))


async def test_a_failed_start_stops_the_started_ones(shipkit_config: NatsConfig) -> None:
    """When one service cannot start, the ones already running are shut down and the connection closed."""
    broken = Service("broken")

    @broken.on_event("thing.*", stream=StreamConfig(name="NO_SUCH_STREAM", subjects=["nosuch.>"]))
    async def on_thing(payload: dict[str, Any]) -> None:
        """Never called: its stream is missing under verify."""

    connection = ConnectionManager(shipkit_config)
    first = _echo_service("delta")
    fleet = Fleet([first, broken], connection, provision="verify")
    with pytest.raises(ProvisioningError):
        await fleet.start()
    assert [runtime.state.value for runtime in fleet.runtimes] == ["stopped", "stopped"]
    assert not connection.is_connected
