"""Streams, their consumers and the KV / object buckets behind them: :class:`StreamCollector`.

One ``$JS.API.STREAM.LIST`` page per 256 streams, then one ``$JS.API.CONSUMER.LIST`` per
stream that has consumers. A consumer is *behind* when more than ``behind_after`` messages
wait for it; the page colours it.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client

from shipkit.dashboard._wire import js_api


def _kind(name: str) -> tuple[str, str]:
    """``(kind, bucket)``: KV and object buckets are streams named ``KV_x`` / ``OBJ_x``."""
    if name.startswith("KV_"):
        return "kv", name[3:]
    if name.startswith("OBJ_"):
        return "object", name[4:]
    return "stream", ""


def _consumer(info: dict[str, Any], behind_after: int) -> dict[str, Any]:
    config = info.get("config", {})
    pending = int(info.get("num_pending", 0))
    return {
        "name": info.get("name", ""),
        "durable": bool(config.get("durable_name")),
        "filter": config.get("filter_subject") or ", ".join(config.get("filter_subjects") or []),
        "pending": pending,
        "ack_pending": int(info.get("num_ack_pending", 0)),
        "redelivered": int(info.get("num_redelivered", 0)),
        "waiting": int(info.get("num_waiting", 0)),
        "behind": pending > behind_after,
    }


class StreamCollector:
    """Every stream with its state, cluster placement and consumers, refreshed by :meth:`refresh`.

    Args:
        timeout_s: of each JetStream API request.
        behind_after: pending messages above which a consumer is flagged as behind.
    """

    def __init__(self, *, timeout_s: float = 5.0, behind_after: int = 100) -> None:
        self.timeout_s = timeout_s
        self.behind_after = behind_after
        self._streams: list[dict[str, Any]] = []

    @property
    def names(self) -> list[str]:
        """The stream names seen by the last refresh."""
        return [s["name"] for s in self._streams]

    async def refresh(self, nc: Client) -> None:
        """List the streams (paged) and the consumers of each stream that has any."""
        found: list[dict[str, Any]] = []
        while True:
            page = await js_api(nc, "$JS.API.STREAM.LIST", {"offset": len(found)}, timeout_s=self.timeout_s)
            found.extend(page.get("streams") or [])
            if not page.get("streams") or len(found) >= int(page.get("total", 0)):
                break
        streams = []
        for info in found:
            summary = self._stream(info)
            if summary["consumer_count"]:
                summary["consumers"] = await self._consumers(nc, summary["name"])
            streams.append(summary)
        self._streams = sorted(streams, key=lambda s: s["name"])

    async def _consumers(self, nc: Client, stream: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = await js_api(nc, f"$JS.API.CONSUMER.LIST.{stream}", {"offset": len(found)}, timeout_s=self.timeout_s)
            found.extend(page.get("consumers") or [])
            if not page.get("consumers") or len(found) >= int(page.get("total", 0)):
                break
        return sorted((_consumer(c, self.behind_after) for c in found), key=lambda c: c["name"])

    @staticmethod
    def _stream(info: dict[str, Any]) -> dict[str, Any]:
        config, state, cluster = info.get("config", {}), info.get("state", {}), info.get("cluster") or {}
        kind, bucket = _kind(config.get("name", ""))
        return {
            "name": config.get("name", ""),
            "kind": kind,
            "bucket": bucket,
            "subjects": config.get("subjects") or [],
            "retention": config.get("retention", ""),
            "storage": config.get("storage", ""),
            "replicas": int(config.get("num_replicas", 1)),
            "leader": cluster.get("leader") or "",
            "messages": int(state.get("messages", 0)),
            "bytes": int(state.get("bytes", 0)),
            "consumer_count": int(state.get("consumer_count", 0)),
            "consumers": [],
        }

    def snapshot(self) -> list[dict[str, Any]]:
        """The last refresh's streams, by name."""
        return self._streams
