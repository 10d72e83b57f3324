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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from shipkit.config import DEFAULT_NATS_URL, NatsConfig, default_nats_url
from shipkit.connection import ConnectionManager, ProvisionMode
from shipkit.errors import ConfigurationError
from shipkit.logging import get_logger
from shipkit.server import NatsServer
from shipkit.service.app import Service
from shipkit.service.fleet import Fleet
from shipkit.service.runtime import Counts, Runtime

__all__ = ["Stoppable", "capture_signals", "resolve_config", "run", "serve"]

log = get_logger("shipkit.service.runner")

EMBEDDED_URL = DEFAULT_NATS_URL
"""Where :func:`serve` looks for a server, and starts an embedded one, when no URL is configured."""


class Stoppable(Protocol):
    """What :func:`capture_signals` drives: a :class:`Runtime` or a :class:`Fleet`."""

    @property
    def should_exit(self) -> asyncio.Event:
        """Set once an exit was requested."""
        ...

    def request_exit(self, *, force: bool = False) -> None:
        """Ask to stop; ``force`` skips the grace period."""
        ...


@contextmanager
def capture_signals(runtime: Stoppable) -> Iterator[None]:
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


def resolve_config(
    nats_url: str | None, config: NatsConfig | None, embedded: bool, data_dir: str | Path
) -> tuple[NatsConfig, NatsServer | None]:
    """The config to connect with, and the embedded server started for it (or None).

    The embedded server is only for "nothing configured": no URL given (argument, ``config``
    with ``servers`` set, or environment) and nothing listening on localhost:4222.
    """
    if config is None:
        url = nats_url or default_nats_url()
        config = NatsConfig.from_url(url)
        explicit = nats_url is not None or url != EMBEDDED_URL
    else:
        explicit = "servers" in config.model_fields_set or config.url != EMBEDDED_URL
    if explicit or not embedded:
        return config, None
    if _listening(EMBEDDED_URL):
        log.info(
            "embedded_server.shared",
            url=EMBEDDED_URL,
            hint="a server already listens there (maybe another `shipkit run`'s embedded one): it is used, and "
            "stops when its owner stops; run `shipkit server` once for a fleet that outlives any one service",
        )
        return config, None
    server = NatsServer(port=urlparse(EMBEDDED_URL).port, store_dir=Path(data_dir) / "nats")
    # Started on this (the main) thread on purpose: the parent-death signal follows the thread
    # that forked, and an executor thread may end before the server should.
    server.start()
    log.info(
        "embedded_server.started",
        url=server.url,
        store_dir=str(server.store_dir),
        hint=f"nothing was listening on {EMBEDDED_URL}; other `shipkit run` processes without a URL share this "
        "server and lose it when this process stops; pass --no-embedded to turn this off",
    )
    return config.model_copy(update={"servers": [server.url]}), server


async def serve(
    service: Service | Sequence[Service],
    *,
    nats_url: str | None = None,
    config: NatsConfig | None = None,
    graceful_timeout_s: float | None = None,
    provision: ProvisionMode = "create",
    embedded: bool = True,
    data_dir: str | Path = ".",
    handle_signals: bool = True,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    strict_name: bool = False,
    replicas: int | None = None,
) -> Counts:
    """Run ``service`` (or several, on one connection) until SIGINT/SIGTERM, then shut down in order.

    Args:
        service: one service, or a sequence run side by side in this process (a :class:`Fleet`).
        nats_url: server URL(s); default from ``SHIPKIT_NATS_URL`` / ``NATS_URL`` / localhost:4222.
        config: a full :class:`NatsConfig` (credentials, TLS ...) instead of ``nats_url``; the
            embedded server is still used when its ``servers`` were not set explicitly.
        graceful_timeout_s: grace for in-flight work at shutdown (default: the service's).
        provision: ``"create"`` or ``"verify"``.
        embedded: when no URL was given anywhere and nothing listens on localhost:4222, start an
            embedded nats-server there with its store under ``data_dir/nats``.
        handle_signals: install SIGINT/SIGTERM handlers (turn off when embedding).
        metrics_port: serve Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` on this
            port (0: a free one; None: off). See ``docs/observability.md``.
        metrics_host: the interface that server binds (loopback by default).
        strict_name: refuse to start when another version or endpoint set runs under a
            service's name (otherwise that is a warning).
        replicas: replicas of every stream and bucket provisioned at R1 (overrides the service's).

    Returns:
        The shutdown counts (handled, failed, cancelled), summed over the services.
    """
    services = [service] if isinstance(service, Service) else list(service)
    if metrics_port is not None and len(services) > 1:  # refused before an embedded server is started
        raise ConfigurationError(
            "metrics_port serves one service's metrics: run each service of a fleet in its own process to scrape them"
        )
    config, server = resolve_config(nats_url, config, embedded, data_dir)
    if config.name is None:
        config = config.model_copy(update={"name": "+".join(s.name for s in services)})
    target: Runtime | Fleet
    options: dict[str, Any] = {
        "graceful_timeout_s": graceful_timeout_s,
        "provision": provision,
        "name_guard": "strict" if strict_name else "warn",
        "replicas": replicas,
    }
    if len(services) == 1:
        target = Runtime(services[0], config, metrics_port=metrics_port, metrics_host=metrics_host, **options)
    else:
        target = Fleet(services, ConnectionManager(config), **options)
    try:
        with capture_signals(target) if handle_signals else nullcontext():
            await target.serve()
    finally:
        if server is not None:
            log.warning(
                "embedded_server.stopping",
                url=server.url,
                hint="any other process using this embedded server loses its connection now",
            )
            await asyncio.to_thread(server.stop)
            log.info("embedded_server.stopped")
    return target.counts


def run(service: Service | Sequence[Service], nats_url: str | None = None, **options: Any) -> Counts:
    """Blocking :func:`serve` in a fresh event loop (what ``shipkit run`` calls)."""
    return asyncio.run(serve(service, nats_url=nats_url, **options))
