"""A live tail of the event stream: :class:`EventTail`.

A core subscription on the event prefix (``ship.events.>``) sees every event as it is
published into the stream, at no cost to the stream itself. The last ``keep`` events stay in a
ring buffer, each numbered, so the live feed sends a browser only what it has not seen.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit.connection import ConnectionManager
from shipkit.errors import translate_nats_errors


class EventTail:
    """The last events published under ``prefix``.

    Args:
        connection: the dashboard's connection.
        prefix: the event subjects' prefix (``ship.events``).
        keep: how many events the buffer holds.
        on_event: called with each decoded event (the queues keep their jobs' events).
    """

    def __init__(
        self,
        connection: ConnectionManager,
        prefix: str = "ship.events",
        *,
        keep: int = 500,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._connection = connection
        self.subject = f"{prefix}.>"
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._on_event = on_event
        self._sub: Subscription | None = None
        self.last_seq = 0

    async def start(self) -> None:
        """Subscribe to the event subjects."""
        with translate_nats_errors(f"subscribe {self.subject}"):
            self._sub = await self._connection.client.subscribe(self.subject, cb=self._on_msg)

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._sub is not None:
            with translate_nats_errors(f"unsubscribe {self.subject}"):
                await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        try:
            body: Any = json.loads(msg.data)
        except ValueError:
            body = msg.data.decode(errors="replace")  # shown as text: a tail hides nothing that was sent
        self.last_seq += 1
        event = {"seq": self.last_seq, "subject": msg.subject, "received_at": time.time(), "event": body}
        self._events.append(event)
        if self._on_event is not None and isinstance(body, dict):
            self._on_event(body)

    def since(self, seq: int, subject_filter: str = "") -> list[dict[str, Any]]:
        """Buffered events after ``seq`` whose subject contains ``subject_filter``, oldest first."""
        return [e for e in self._events if e["seq"] > seq and subject_filter in e["subject"]]
