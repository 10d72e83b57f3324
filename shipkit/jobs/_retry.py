"""Retrying what a restarting or briefly unreachable server makes fail: :func:`retry_transient`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shipkit.errors import NatsConnectionError, NatsTimeoutError, ShipkitError, StreamNotFoundError
from shipkit.logging import get_logger

log = get_logger(__name__)

# "No stream answered" is among them because a server shutting down stops JetStream before it
# drops its connections.
TRANSIENT_ERRORS: tuple[type[ShipkitError], ...] = (NatsConnectionError, NatsTimeoutError, StreamNotFoundError)


async def retry_transient(what: str, action: Callable[[], Awaitable[None]], deadline_s: float) -> None:
    """Run ``action``, retrying transient failures with backoff for up to ``deadline_s``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    delay = 0.05
    while True:
        try:
            await action()
            return
        except TRANSIENT_ERRORS as exc:
            if loop.time() + delay > give_up:
                raise
            log.debug("job.retrying", what=what, error=str(exc), delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
