"""Ship-wide settings shared by every agent: :class:`ShipConfig` on the ``ship_config`` bucket.

Keys are config names (``log.level``, ``llm.provider``), values any JSON. The bucket keeps 5
revisions and no TTL (wire contract §2).
"""

from __future__ import annotations

from typing import Any, Final

from shipkit.config import KvBucketConfig
from shipkit.primitives.kv import KvPrimitive, KvWatch

__all__ = ["SHIP_CONFIG_BUCKET", "ShipConfig"]

SHIP_CONFIG_BUCKET: Final = KvBucketConfig(bucket="ship_config", history=5)
"""The contract's ``ship_config`` bucket: history 5, no TTL."""


class ShipConfig(KvPrimitive):
    """Shared configuration (seed: ``ShipConfig``).

    ::

        async with ShipConfig(conn) as config:
            await config.set("log.level", "debug")
            level = await config.get("log.level", default="info")

    Args:
        connection: a shared :class:`~shipkit.connection.ConnectionManager`, or a config / URL /
            ``None`` for an owned connection.
        bucket_config: another bucket than ``ship_config`` (history 5, no TTL).
    """

    DEFAULT_BUCKET = SHIP_CONFIG_BUCKET

    async def set(self, key: str, value: Any) -> int:
        """Store ``value`` (JSON) under ``key``; return the revision."""
        return await self.store.put(key, value)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is unset, deleted or JSON ``null``.

        Raises:
            SerializationError: the stored value is not JSON.
        """
        value = await self.store.get(key)
        return default if value is None else value

    async def keys(self) -> list[str]:
        """Every key that holds a value, sorted."""
        return await self.store.keys()

    async def get_all(self) -> dict[str, Any]:
        """Every setting, ``{key: value}`` (undecodable values are logged and left out)."""
        return await self.store.get_all()

    async def delete(self, key: str) -> None:
        """Remove a setting (watchers see a ``delete``)."""
        await self.store.delete(key)

    def watch(self, key_pattern: str = ">", *, initial: bool = True) -> KvWatch:
        """Watch settings: the current ones first (unless ``initial=False``), then every change.

        See :meth:`~shipkit.primitives.kv.KvStore.watch`.
        """
        return self.store.watch(key_pattern, initial=initial)
