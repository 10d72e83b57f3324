"""Services and their instances from ``$SRV`` discovery: :class:`ServiceCollector`.

One ``$SRV.STATS`` request per refresh, answered by every instance of every service (NATS
micro protocol). Between two answers the collector derives what STATS does not say: the
latency of the requests handled since the previous refresh ("recent"), and staleness — an
instance that stopped answering stays listed, marked stale, for ``forget_after_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client

from shipkit.dashboard._wire import gather


@dataclass(slots=True)
class _Instance:
    stats: dict[str, Any]
    seen_at: float
    recent_latency_ns: dict[str, int | None] = field(default_factory=dict)


def _uptime_s(started: object, now: float) -> float | None:
    if not isinstance(started, str):
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


class ServiceCollector:
    """What every running service instance reports, refreshed by :meth:`refresh`.

    Args:
        window_s: how long replies to one ``$SRV.STATS`` are collected.
        stale_after_s / forget_after_s: an instance silent this long is stale / dropped.
    """

    def __init__(self, *, window_s: float = 0.25, stale_after_s: float = 6.0, forget_after_s: float = 120.0) -> None:
        self.window_s = window_s
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self._instances: dict[str, _Instance] = {}

    async def refresh(self, nc: Client) -> None:
        """Ask every instance for its stats once and fold the answers in."""
        now = time.monotonic()
        for stats in await gather(nc, "$SRV.STATS", self.window_s):
            uid = stats.get("id")
            if isinstance(uid, str) and isinstance(stats.get("endpoints"), list):
                self._fold(uid, stats, now)
        self._instances = {
            uid: inst for uid, inst in self._instances.items() if now - inst.seen_at < self.forget_after_s
        }

    def _fold(self, uid: str, stats: dict[str, Any], now: float) -> None:
        previous = self._instances.get(uid)
        recent: dict[str, int | None] = {}
        before = {e.get("name"): e for e in previous.stats["endpoints"]} if previous else {}
        for endpoint in stats["endpoints"]:
            old = before.get(endpoint.get("name"), {})
            handled = int(endpoint.get("num_requests", 0)) - int(old.get("num_requests", 0))
            spent = int(endpoint.get("processing_time", 0)) - int(old.get("processing_time", 0))
            if handled > 0:
                recent[endpoint.get("name", "")] = spent // handled
            elif previous is not None:  # no new requests: keep showing the last window's latency
                recent[endpoint.get("name", "")] = previous.recent_latency_ns.get(endpoint.get("name", ""))
        self._instances[uid] = _Instance(stats, now, recent)

    def snapshot(self) -> list[dict[str, Any]]:
        """Services by name, each with its instances (stale ones marked) and summed counters."""
        now_mono, now_wall = time.monotonic(), time.time()
        services: dict[str, dict[str, Any]] = {}
        for uid, inst in sorted(self._instances.items()):
            stats = inst.stats
            endpoints = [
                {
                    "name": e.get("name", ""),
                    "subject": e.get("subject", ""),
                    "requests": int(e.get("num_requests", 0)),
                    "errors": int(e.get("num_errors", 0)),
                    "last_error": e.get("last_error") or "",
                    "avg_latency_ns": int(e.get("average_processing_time", 0)),
                    "recent_latency_ns": inst.recent_latency_ns.get(e.get("name", "")),
                }
                for e in stats["endpoints"]
            ]
            instance = {
                "id": uid,
                "version": stats.get("version", ""),
                "started": stats.get("started"),
                "uptime_s": _uptime_s(stats.get("started"), now_wall),
                "stale": now_mono - inst.seen_at > self.stale_after_s,
                "last_seen_s": round(now_mono - inst.seen_at, 1),
                "requests": sum(e["requests"] for e in endpoints),
                "errors": sum(e["errors"] for e in endpoints),
                "endpoints": endpoints,
            }
            name = str(stats.get("name", "?"))
            service = services.setdefault(name, {"name": name, "instances": [], "requests": 0, "errors": 0})
            service["instances"].append(instance)
            service["requests"] += instance["requests"]
            service["errors"] += instance["errors"]
        for service in services.values():
            live = [i for i in service["instances"] if not i["stale"]]
            service["versions"] = sorted({i["version"] for i in service["instances"]})
            service["live"] = len(live)
        return [services[name] for name in sorted(services)]
