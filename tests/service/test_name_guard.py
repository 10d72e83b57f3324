"""Tests for shipkit.service.name_guard: a service warns about, or refuses, a different namesake."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from shipkit import Service
from shipkit.config import NatsConfig
from shipkit.errors import ConfigurationError
from shipkit.service.runtime import Runtime
from shipkit.testing import run_service


def _coordinator(version: str, *commands: str) -> Service:
    service = Service("coordinator", version=version)
    for command in commands:

        async def answer(payload: dict[str, Any]) -> dict[str, Any]:
            return payload

        service.add_handler(command, answer)
    return service


async def _start(service: Service, config: NatsConfig, guard: str) -> Runtime:
    runtime = Runtime(service, config, name_guard=guard)  # type: ignore[arg-type]
    await runtime.start()
    return runtime


async def test_other_version_and_endpoints_are_named_in_a_warning(shipkit_config: NatsConfig) -> None:
    """A namesake with another version and endpoint set is named, with both versions, in one warning."""
    async with run_service(_coordinator("1.0.0", "plan", "status"), shipkit_config):
        with capture_logs() as logs:
            runtime = await _start(_coordinator("9.9.9", "other"), shipkit_config, "warn")
            await runtime.shutdown()
    (warning,) = [entry for entry in logs if entry["event"] == "service.name_conflict"]
    assert warning["log_level"] == "warning"
    assert (warning["version"], warning["other_version"]) == ("9.9.9", "1.0.0")
    assert warning["other_endpoints"] == ["plan=coordinator.plan", "status=coordinator.status"]
    assert warning["endpoints"] == ["other=coordinator.other"]


async def test_an_identical_replica_is_not_a_conflict(shipkit_config: NatsConfig) -> None:
    """A second instance of the same version and endpoints starts without a warning."""
    async with run_service(_coordinator("1.0.0", "plan"), shipkit_config):
        with capture_logs() as logs:
            runtime = await _start(_coordinator("1.0.0", "plan"), shipkit_config, "strict")
            await runtime.shutdown()
    assert not [entry for entry in logs if entry["event"] == "service.name_conflict"]


async def test_strict_refuses_to_start(shipkit_config: NatsConfig) -> None:
    """With strict, a different namesake is a ConfigurationError naming both versions, and nothing keeps running."""
    async with run_service(_coordinator("1.0.0", "plan"), shipkit_config):
        runtime = Runtime(_coordinator("2.0.0", "plan"), shipkit_config, name_guard="strict")
        with pytest.raises(ConfigurationError, match=r"version 1\.0\.0 \(this one: 2\.0\.0\)"):
            await runtime.start()
        assert runtime.state.value == "stopped"
