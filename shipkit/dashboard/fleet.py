"""Beings from the being registry and agents from their heartbeats: :class:`Fleet`.

- Beings: the ``beings_status`` bucket (see :mod:`shipkit.primitives.beings`), followed by a
  :class:`~shipkit.dashboard._wire.KvMirror` once the bucket exists. A being is online while
  its last heartbeat is younger than ``offline_after_s`` (the bucket's TTL removes it later).
- Agents: the agent protocol's ``agents.hb.{agent}.{owner}.{session}`` heartbeats, keyed by
  ``instance_id``; online within three heartbeat intervals (the protocol's liveness slack).
  Nothing is shown while no agent heartbeats.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shipkit.connection import ConnectionManager
from shipkit.dashboard._wire import KvMirror
from shipkit.errors import translate_nats_errors
from shipkit.logging import get_logger
from shipkit.primitives.beings import BEINGS_STATUS_BUCKET

log = get_logger(__name__)

AGENT_HEARTBEATS = "agents.hb.>"
LIVENESS_SLACK = 3
BEINGS_STREAM = f"KV_{BEINGS_STATUS_BUCKET.bucket}"


def _age_s(timestamp: object, now: float) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Fleet:
    """The beings and agents currently known, each with its online flag.

    Args:
        connection: the dashboard's connection.
        offline_after_s: a being without a heartbeat for this long is shown offline.
    """

    def __init__(self, connection: ConnectionManager, *, offline_after_s: float = 60.0) -> None:
        self._connection = connection
        self.offline_after_s = offline_after_s
        self._beings: dict[str, dict[str, Any]] = {}
        self._agents: dict[str, tuple[dict[str, Any], str, float]] = {}
        self._mirror: KvMirror | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Listen for agent heartbeats (beings start once their bucket is seen)."""
        with translate_nats_errors(f"subscribe {AGENT_HEARTBEATS}"):
            self._sub = await self._connection.client.subscribe(AGENT_HEARTBEATS, cb=self._on_heartbeat)

    async def follow_beings(self, stream_names: list[str]) -> None:
        """Start following the being registry when its bucket has appeared."""
        if self._mirror is None and BEINGS_STREAM in stream_names:
            mirror = KvMirror(self._connection, BEINGS_STREAM, f"$KV.{BEINGS_STATUS_BUCKET.bucket}.>", self._on_being)
            await mirror.start()
            self._mirror = mirror

    async def stop(self) -> None:
        """Stop listening."""
        if self._mirror is not None:
            await self._mirror.stop()
        if self._sub is not None:
            with translate_nats_errors(f"unsubscribe {AGENT_HEARTBEATS}"):
                await self._sub.unsubscribe()

    def _on_being(self, subject: str, data: bytes | None) -> None:
        being_id = subject.rpartition(".")[2]
        status = _json_object(data) if data is not None else None
        if status is None:
            if data is not None:
                log.warning("dashboard.being_undecodable", being_id=being_id, size=len(data))
            self._beings.pop(being_id, None)
        else:
            self._beings[being_id] = status

    async def _on_heartbeat(self, msg: Msg) -> None:
        beat = _json_object(msg.data)
        if beat is None or not isinstance(beat.get("instance_id"), str):
            log.warning("dashboard.heartbeat_undecodable", subject=msg.subject, size=len(msg.data))
            return
        self._agents[beat["instance_id"]] = (beat, msg.subject, time.monotonic())

    def beings(self) -> list[dict[str, Any]]:
        """Every being in the registry with its heartbeat age and online flag, by id."""
        now = time.time()
        found = []
        for being_id, status in sorted(self._beings.items()):
            age = _age_s(status.get("last_heartbeat"), now)
            online = age is not None and age < self.offline_after_s and status.get("state") != "offline"
            found.append(
                {
                    "id": status.get("being_id", being_id),
                    "state": status.get("state", ""),
                    "current_task": status.get("current_task"),
                    "last_heartbeat": status.get("last_heartbeat"),
                    "heartbeat_age_s": round(age, 1) if age is not None else None,
                    "uptime_s": status.get("uptime_seconds"),
                    "capabilities": status.get("capabilities") or [],
                    "online": online,
                }
            )
        return found

    def agents(self) -> list[dict[str, Any]]:
        """Every agent instance heard from, by agent name; offline after three missed heartbeats."""
        now = time.monotonic()
        found = []
        for instance_id, (beat, subject, heard) in self._agents.items():
            declared = beat.get("interval_s")
            interval = float(declared) if isinstance(declared, int | float) and declared > 0 else 10.0
            age = now - heard
            found.append(
                {
                    "agent": beat.get("agent", ""),
                    "owner": beat.get("owner", ""),
                    "session": beat.get("session"),
                    "instance_id": instance_id,
                    "subject": subject,
                    "interval_s": interval,
                    "heartbeat_age_s": round(age, 1),
                    "endpoints": sorted((beat.get("endpoints") or {}).keys()),
                    "online": age < LIVENESS_SLACK * interval,
                }
            )
        return sorted(found, key=lambda a: (a["agent"], a["instance_id"]))
