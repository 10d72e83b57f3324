"""Retrying what a restarting or briefly unreachable server makes fail: :func:`retry_transient`.

The backoff lives in :mod:`shipkit._failover` (shared with the event bus and KV writes); the
job system adds "stream not found" to what it retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from shipkit import _failover
from shipkit.errors import ShipkitError, StreamNotFoundError

# "No stream answered" is among them because a server shutting down stops JetStream before it
# drops its connections (direct gets still say "not found" then).
TRANSIENT_ERRORS: tuple[type[ShipkitError], ...] = (*_failover.TRANSIENT_ERRORS, StreamNotFoundError)


async def retry_transient(what: str, action: Callable[[], Awaitable[None]], deadline_s: float) -> None:
    """Run ``action``, retrying transient failures with backoff for up to ``deadline_s``."""
    await _failover.retry_transient(what, action, deadline_s, transient=TRANSIENT_ERRORS)
