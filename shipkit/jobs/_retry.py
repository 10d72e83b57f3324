"""Retrying what a restarting or briefly unreachable server makes fail: :func:`first_then_retry`.

The backoff lives in :mod:`shipkit._failover` (shared with the event bus and KV writes); the
job system adds "stream not found" to what it retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shipkit import _failover
from shipkit.errors import NotConnectedError, ShipkitError, StreamNotFoundError

T = TypeVar("T")

# "No stream answered" is among them because a server shutting down stops JetStream before it
# drops its connections (direct gets still say "not found" then).
TRANSIENT_ERRORS: tuple[type[ShipkitError], ...] = (*_failover.TRANSIENT_ERRORS, StreamNotFoundError)


async def first_then_retry(what: str, action: Callable[[], Awaitable[T]], deadline_s: float) -> T:
    """``action()`` once directly (the common case, no retry frames); on a transient failure, retried.

    The retries run under what is left of ``deadline_s``; :class:`NotConnectedError` (used
    before connect or after close) is raised at once.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await action()
    except NotConnectedError:
        raise
    except TRANSIENT_ERRORS:
        pass
    remaining_s = max(deadline_s - (loop.time() - started), 0.0)
    return await _failover.retry_transient(what, action, remaining_s, transient=TRANSIENT_ERRORS)
