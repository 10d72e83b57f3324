"""Short-lived health reports: :class:`HealthMetrics` on the ``ship_health`` bucket.

Each source (an agent, a service) writes its metrics JSON under its own key; the bucket keeps
5 revisions and expires a report 120 s after it was written (wire contract §2), so a source
that stops reporting disappears.
"""

from __future__ import annotations

from typing import Any, Final

from shipkit._names import validate_kv_key
from shipkit.config import KvBucketConfig
from shipkit.primitives.kv import KvPrimitive

__all__ = ["SHIP_HEALTH_BUCKET", "HealthMetrics"]

SHIP_HEALTH_BUCKET: Final = KvBucketConfig(bucket="ship_health", history=5, ttl_s=120.0)
"""The contract's ``ship_health`` bucket: history 5, TTL 120 s."""


class HealthMetrics(KvPrimitive):
    """TTL-based health reporting (seed: ``HealthMetrics``).

    ::

        async with HealthMetrics(conn) as health:
            await health.report("forge", {"cpu_percent": 12.5, "queue_depth": 3})
            everyone = await health.get_all()

    Args:
        connection: a shared :class:`~shipkit.connection.ConnectionManager`, or a config / URL /
            ``None`` for an owned connection.
        bucket_config: another bucket than ``ship_health`` (history 5, TTL 120 s).
    """

    DEFAULT_BUCKET = SHIP_HEALTH_BUCKET

    async def report(self, source: str, metrics: Any) -> int:
        """Store ``metrics`` as is (compact JSON, no envelope) under ``source``; return the revision."""
        validate_kv_key(source, "health source")
        return await self.store.put(source, metrics)

    async def get(self, source: str) -> Any | None:
        """The latest metrics of ``source``, or ``None`` when it has not reported within the TTL."""
        validate_kv_key(source, "health source")
        return await self.store.get(source)

    async def get_all(self) -> dict[str, Any]:
        """``{source: metrics}`` for every current report (undecodable ones are logged and left out)."""
        return await self.store.get_all()
