"""``shipkit dashboard``: serve the live web dashboard (needs the ``shipkit[dashboard]`` extra).

The command parses and converts; :func:`shipkit.dashboard.serve` does the work. Starlette and
uvicorn are imported only when the command runs, so the rest of the CLI works without them.
"""

from __future__ import annotations

import sys

import click
from pydantic import SecretStr

from shipkit.cli._common import startup_failure
from shipkit.cli._connection_options import connection_options_with_nats_token
from shipkit.config import NatsConfig
from shipkit.errors import ShipkitError

__all__ = ["dashboard_command"]


@click.command("dashboard")
@connection_options_with_nats_token
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8642, show_default=True, help="Port to serve on.")
@click.option(
    "--token",
    envvar="SHIPKIT_DASHBOARD_TOKEN",
    default=None,
    metavar="TOKEN",
    help="Require this token for the page and its API (or set $SHIPKIT_DASHBOARD_TOKEN).",
)
@click.option("--allow-actions", is_flag=True, help="Offer cancel, retry and purge buttons on jobs.")
def dashboard_command(nats_config: NatsConfig, host: str, port: int, token: str | None, allow_actions: bool) -> None:
    """Serve a live web page of the services, beings, agents, jobs, events and streams on NATS.

    \b
    Examples:
      shipkit dashboard
      shipkit dashboard --nats-url nats://nats.internal:4222 --allow-actions
      shipkit dashboard --creds ops.creds --tls-ca ca.pem --nats-url tls://nats.internal:4222
      SHIPKIT_DASHBOARD_TOKEN=s3cret shipkit dashboard --host 0.0.0.0
    """
    from shipkit.logging import configure_logging

    configure_logging("warning", "auto")  # the dashboard's own problems only; uvicorn logs at warning too
    try:
        from shipkit.dashboard import DashboardSettings, serve
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs its extra: pip install 'shipkit[dashboard]' ({exc})") from exc
    settings = DashboardSettings(
        nats=nats_config.model_copy(update={"name": "shipkit-dashboard"}),
        host=host,
        port=port,
        token=SecretStr(token) if token else None,
        allow_actions=allow_actions,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        click.echo(f"Warning: serving on {host} without --token: anyone who can reach it sees the system", err=True)
    click.echo(f"shipkit dashboard on http://{host}:{port}/ (reading {settings.nats.url})", err=True)
    try:
        serve(settings)
    except KeyboardInterrupt:  # Ctrl-C while connecting, before uvicorn handles signals
        sys.exit(130)
    except ShipkitError as exc:
        startup_failure(exc, show_traceback=False)
