"""Serving the dashboard with uvicorn: :func:`serve` and :func:`serve_async`."""

from __future__ import annotations

import asyncio

import uvicorn

from shipkit.dashboard.app import create_app
from shipkit.dashboard.hub import Hub
from shipkit.dashboard.settings import DashboardSettings


async def serve_async(settings: DashboardSettings, *, log_level: str = "warning") -> None:
    """Connect to NATS first (a failure raises before anything listens), then serve until told to stop.

    Raises:
        NatsConnectionError: the server cannot be reached.
    """
    hub = Hub(settings)
    await hub.start()
    try:
        config = uvicorn.Config(
            create_app(settings, hub),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=2,  # live feeds never end on their own: close them after 2 s
        )
        await uvicorn.Server(config).serve()  # uvicorn handles SIGINT / SIGTERM and shuts down in order
    finally:
        await hub.stop()


def serve(settings: DashboardSettings, *, log_level: str = "warning") -> None:
    """Serve the dashboard until SIGINT / SIGTERM (see :func:`serve_async`)."""
    asyncio.run(serve_async(settings, log_level=log_level))
