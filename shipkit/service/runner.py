"""Run a service until a signal: :func:`run` (blocking) and :func:`serve` (async).

This is where process-level concerns live: signal capture (SIGINT and SIGTERM; a second SIGINT
skips the grace period; previous handlers restored), the embedded development server, and the
choice of NATS URL. :class:`~shipkit.service.runtime.Runtime` itself installs no signal handlers, so it
can be embedded in other programs and tests.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog

from shipkit.config import DEFAULT_NATS_URL, NatsConfig, default_nats_url
from shipkit.connection import ProvisionMode
from shipkit.server import NatsServer
from shipkit.service.runtime import Counts, Runtime

if TYPE_CHECKING:
    from shipkit.service.app import Service

__all__ = ["capture_signals", "run", "serve"]

log = structlog.get_logger("shipkit.service.runner")

EMBEDDED_URL = DEFAULT_NATS_URL
"""Where :func:`serve` looks for a server, and starts an embedded one, when no URL is configured."""


@contextmanager
def capture_signals(runtime: Runtime) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``runtime.request_exit``; a second SIGINT forces. Restores handlers."""
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: signal.Signals) -> None:
        force = signum == signal.SIGINT and runtime.should_exit.is_set()
        log.info("signal.received", signal=signal.Signals(signum).name, force=force)
        runtime.request_exit(force=force)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:  # None: installed outside Python; remove_signal_handler reset it
                signal.signal(signum, handler)


def _listening(url: str, timeout_s: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "localhost", parsed.port or 4222), timeout=timeout_s):
            return True
    except OSError:
        return False


async def serve(
    service: Service,
    *,
    nats_url: str | None = None,
    config: NatsConfig | None = None,
    graceful_timeout_s: float | None = None,
    provision: ProvisionMode = "create",
    embedded: bool = True,
    data_dir: str | Path = ".",
    handle_signals: bool = True,
    replicas: int | None = None,
) -> Counts:
    """Run ``service`` until SIGINT/SIGTERM (or ``runtime.request_exit()``), then shut down in order.

    Args:
        nats_url: server URL(s); default from ``SHIPKIT_NATS_URL`` / ``NATS_URL`` / localhost:4222.
        config: a full :class:`NatsConfig` (credentials, TLS ...) instead of ``nats_url``.
        graceful_timeout_s: grace for in-flight work at shutdown (default: the service's).
        provision: ``"create"`` or ``"verify"``.
        embedded: when no URL was given anywhere and nothing listens on localhost:4222, start an
            embedded nats-server there with its store under ``data_dir/nats``.
        handle_signals: install SIGINT/SIGTERM handlers (turn off when embedding).
        replicas: replicas of every stream and bucket provisioned at R1 (overrides the service's).

    Returns:
        The shutdown counts (handled, failed, cancelled).
    """
    server: NatsServer | None = None
    if config is None:
        url = nats_url or default_nats_url()
        explicit = nats_url is not None or url != EMBEDDED_URL
        if embedded and not explicit and not _listening(url):
            server = NatsServer(port=urlparse(EMBEDDED_URL).port, store_dir=Path(data_dir) / "nats")
            await server.__aenter__()
            log.info(
                "embedded_server.started",
                url=server.url,
                store_dir=str(server.store_dir),
                hint=f"nothing was listening on {EMBEDDED_URL}; pass --no-embedded to turn this off",
            )
            url = server.url
        config = NatsConfig.from_url(url, name=service.name)
    runtime = Runtime(service, config, graceful_timeout_s=graceful_timeout_s, provision=provision, replicas=replicas)
    try:
        with capture_signals(runtime) if handle_signals else nullcontext():
            await runtime.serve()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
            log.info("embedded_server.stopped")
    return runtime.counts


def run(service: Service, nats_url: str | None = None, **options: Any) -> Counts:
    """Blocking :func:`serve` in a fresh event loop (what ``shipkit run`` calls)."""
    return asyncio.run(serve(service, nats_url=nats_url, **options))
