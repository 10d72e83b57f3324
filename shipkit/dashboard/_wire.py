"""The few NATS calls the dashboard makes, each one request however large the system is.

- :func:`gather`: one request answered by many (``$SRV.STATS``), replies collected for a window.
- :func:`js_api`: one JetStream API call (``$JS.API.STREAM.LIST`` ...) decoded, errors raised.
- :class:`KvMirror`: an ordered consumer over a KV stream that keeps the last value of every
  key in memory and is told about every change, so a refresh reads memory, not the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from shipkit.connection import ConnectionManager
from shipkit.errors import JetStreamError, translate_nats_errors
from shipkit.logging import get_logger

log = get_logger(__name__)

_KV_OPERATION = "KV-Operation"


async def gather(nc: Client, subject: str, window_s: float) -> list[dict[str, Any]]:
    """Publish one request on ``subject`` and collect every JSON reply that arrives within ``window_s``."""
    replies: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
        except ValueError:
            log.warning("dashboard.reply_undecodable", subject=subject, size=len(msg.data))
            return
        if isinstance(body, dict):
            replies.append(body)

    inbox = nc.new_inbox()
    with translate_nats_errors(f"gather {subject}"):
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(subject, b"", reply=inbox)
            await asyncio.sleep(window_s)  # the window is the protocol: responders answer once, nobody says "done"
        finally:
            await sub.unsubscribe()
    return replies


async def js_api(nc: Client, subject: str, body: dict[str, Any] | None = None, *, timeout_s: float) -> dict[str, Any]:
    """One ``$JS.API`` request; the decoded response, or :class:`JetStreamError` with its ``err_code``."""
    payload = json.dumps(body).encode() if body is not None else b""
    with translate_nats_errors(subject):
        msg = await nc.request(subject, payload, timeout=timeout_s)
    try:
        response: dict[str, Any] = json.loads(msg.data)
    except ValueError as exc:
        raise JetStreamError(f"{subject}: response is not JSON") from exc
    error = response.get("error")
    if error:
        raise JetStreamError(
            f"{subject}: {error.get('description', 'error')}", err_code=error.get("err_code"), status=error.get("code")
        )
    return response


class KvMirror:
    """The last value of every key of one KV stream, kept current by one ordered consumer.

    Args:
        connection: the dashboard's connection.
        stream: the KV stream (``KV_{bucket}``).
        subject: the keys to follow (``$KV.{bucket}.job.*``).
        on_change: called with ``(subject, value or None for a delete)`` for every change, in order.
    """

    def __init__(
        self,
        connection: ConnectionManager,
        stream: str,
        subject: str,
        on_change: Callable[[str, bytes | None], None],
    ) -> None:
        self.stream = stream
        self.subject = subject
        self._connection = connection
        self._on_change = on_change
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe: the current value of every key arrives first, then every change."""

        async def deliver(msg: Msg) -> None:
            headers = msg.headers or {}
            deleted = headers.get(_KV_OPERATION) in ("DEL", "PURGE")
            self._on_change(msg.subject, None if deleted else msg.data)

        with translate_nats_errors(f"watch {self.stream} {self.subject}"):
            self._sub = await self._connection.jetstream.subscribe(
                self.subject,
                stream=self.stream,
                cb=deliver,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                idle_heartbeat=5.0,
            )

    async def stop(self) -> None:
        """Unsubscribe (the server removes the ordered consumer)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with translate_nats_errors(f"unwatch {self.stream}"):
                await sub.unsubscribe()
