"""Everything the dashboard reads, refreshed on one connection: :class:`Hub`.

The hub owns the NATS connection and the collectors, runs the two refresh loops (services and
job counts every ``refresh_s``; streams, consumers, buckets and queue discovery every
``streams_every_s``) and tells the live feed when something changed. Pushed data (job records,
beings, heartbeats, events) arrives by subscription and costs no request per refresh.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shipkit.connection import ConnectionManager
from shipkit.dashboard.events import EventTail
from shipkit.dashboard.fleet import Fleet
from shipkit.dashboard.queues import QueueView
from shipkit.dashboard.services import ServiceCollector
from shipkit.dashboard.settings import DashboardSettings
from shipkit.dashboard.streams import StreamCollector
from shipkit.errors import ShipkitError
from shipkit.logging import get_logger

log = get_logger(__name__)

_COUNTERS_SUFFIX = "_COUNTERS"


def _queue_of(stream: dict[str, Any]) -> tuple[str, str] | None:
    """``(queue name, subject prefix)`` when ``stream`` is a job queue's counter stream."""
    name: str = stream["name"]
    if not (name.startswith("JOBS_") and name.endswith(_COUNTERS_SUFFIX)):
        return None
    ids = [s for s in stream["subjects"] if s.endswith(".ids")]
    if not ids:
        return None
    return name[len("JOBS_") : -len(_COUNTERS_SUFFIX)], ids[0].removesuffix(".ids")


class Hub:
    """The dashboard's view of one NATS system (see the module docstring)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.connection = ConnectionManager(settings.nats.model_copy(update={"name": "shipkit-dashboard"}))
        self.services = ServiceCollector(stale_after_s=max(6.0, 3 * settings.refresh_s))
        self.streams = StreamCollector(timeout_s=settings.nats.request_timeout_s)
        self.fleet = Fleet(self.connection)
        self.events = EventTail(self.connection, settings.event_prefix, on_event=self._on_event)
        self.queues: dict[str, QueueView] = {}
        self.problems: dict[str, str] = {}
        self.changed = asyncio.Event()
        self.refreshed_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect, subscribe, read everything once, then keep refreshing in the background."""
        await self.connection.connect()
        await self.fleet.start()
        await self.events.start()
        await self._refresh_streams()
        await self._refresh_fast()
        self._tasks = [
            asyncio.create_task(self._loop(self._refresh_fast, self.settings.refresh_s), name="dashboard-fast"),
            asyncio.create_task(self._loop(self._refresh_streams, self.settings.streams_every_s), name="dashboard-js"),
        ]

    async def stop(self) -> None:
        """Stop the loops and subscriptions, then close the connection (each step even if one fails)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closer in [*(q.stop for q in self.queues.values()), self.events.stop, self.fleet.stop]:
            try:
                await closer()
            except ShipkitError as exc:
                log.warning("dashboard.stop_failed", error=str(exc))
        await self.connection.close()

    async def _loop(self, refresh: Any, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await refresh()

    async def _guarded(self, what: str, refresh: Any) -> None:
        # One failing source (a stream deleted mid-list, a timeout) must not blank the others:
        # it is logged once per change and shown on the page until it recovers.
        try:
            await refresh()
        except ShipkitError as exc:
            if self.problems.get(what) != str(exc):
                log.warning("dashboard.refresh_failed", source=what, error=str(exc))
            self.problems[what] = str(exc)
        else:
            self.problems.pop(what, None)

    async def _refresh_fast(self) -> None:
        await self._guarded("services", lambda: self.services.refresh(self.connection.client))
        for name, queue in list(self.queues.items()):
            await self._guarded(f"queue {name}", queue.refresh)
        self.refreshed_at = time.time()
        self.changed.set()

    async def _refresh_streams(self) -> None:
        await self._guarded("streams", lambda: self.streams.refresh(self.connection.client))
        await self._guarded("beings", lambda: self.fleet.follow_beings(self.streams.names))
        names = set(self.streams.names)
        for stream in self.streams.snapshot():
            found = _queue_of(stream)
            if found and found[0] not in self.queues and f"KV_JOBS_{found[0]}" in names:
                await self._guarded(f"queue {found[0]}", lambda f=found: self._add_queue(*f))
        self.changed.set()

    async def _add_queue(self, name: str, subject_prefix: str) -> None:
        view = QueueView(self.connection, name, subject_prefix)
        await view.start()
        await view.refresh()
        self.queues[name] = view

    def _on_event(self, event: dict[str, Any]) -> None:
        payload = event.get("payload")
        if isinstance(payload, dict) and str(event.get("event_type", "")).startswith("job."):
            queue = self.queues.get(str(payload.get("queue")))
            if queue is not None:
                queue.record_event(event)
        self.changed.set()

    def overview(self) -> dict[str, Any]:
        """Everything the page shows except the job list and the event tail."""
        return {
            "refreshed_at": self.refreshed_at,
            "actions": self.settings.allow_actions,
            "services": self.services.snapshot(),
            "beings": self.fleet.beings(),
            "agents": self.fleet.agents(),
            "queues": [self.queues[name].snapshot() for name in sorted(self.queues)],
            "streams": self.streams.snapshot(),
            "problems": dict(self.problems),
            "last_event_seq": self.events.last_seq,
        }
