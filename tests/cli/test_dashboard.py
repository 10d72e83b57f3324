"""``shipkit dashboard`` takes the connection options of every command (its own ``--token`` guards the page)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from click.testing import CliRunner

from shipkit.cli.dashboard import dashboard_command


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command configures logging for its process: undo it, so later tests see the defaults."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    structlog.reset_defaults()
    root.setLevel(level)
    root.handlers[:] = handlers


def test_dashboard_takes_connection_options_and_fails_fast_without_a_server() -> None:
    """--nats-token and friends reach the connection; no server means exit 3 at once, the token never printed."""
    result = CliRunner().invoke(
        dashboard_command,
        ["--nats-url", "nats://127.0.0.1:9", "--nats-token", "sekrit-tok", "--token", "page-tok", "--port", "0"],
    )
    assert result.exit_code == 3, result.output
    assert "connection refused" in result.output
    assert "sekrit-tok" not in result.output and "page-tok" not in result.output


def test_dashboard_refuses_bad_connection_options_as_usage_errors() -> None:
    """A client certificate without its key is a usage error naming the option (exit 2), before connecting."""
    result = CliRunner().invoke(dashboard_command, ["--tls-cert", __file__, "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "--tls-key" in result.output or "tls_key" in result.output
