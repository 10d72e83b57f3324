"""Who is running and what they are doing: :class:`BeingRegistry` on the ``beings_status`` bucket.

Each being (agent) has one entry, keyed by its id, holding a :class:`~shipkit.models.BeingStatus`
as noesis-ship writes it (wire contract §3 "KV"). The bucket keeps 5 revisions and expires an
entry 300 s after its last write, so a being that stops heartbeating drops out on its own.

Every update is a read-modify-write with revision compare-and-set (retried on conflict), so a
heartbeat racing a status change from another process never reverts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from pydantic import ValidationError

from shipkit._names import validate_kv_key
from shipkit.config import KvBucketConfig, NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import ConfigurationError, KeyNotFoundError, SerializationError
from shipkit.logging import get_logger
from shipkit.models import BeingState, BeingStatus, utc_now_iso
from shipkit.primitives.kv import KvPrimitive

__all__ = ["BEINGS_STATUS_BUCKET", "BeingRegistry"]

log = get_logger(__name__)

BEINGS_STATUS_BUCKET: Final = KvBucketConfig(bucket="beings_status", history=5, ttl_s=300.0)
"""The contract's ``beings_status`` bucket: history 5, TTL 300 s."""


def _state(value: BeingState | str) -> BeingState:
    try:
        return BeingState(value)
    except ValueError:
        allowed = "|".join(s.value for s in BeingState)
        raise ConfigurationError(f"being state {value!r} is not one of {allowed}") from None


class BeingRegistry(KvPrimitive):
    """Registry of beings and their status (seed: ``BeingRegistry``).

    ::

        async with BeingRegistry(conn) as registry:
            await registry.register("forge", capabilities=["code"])
            await registry.update_status("forge", "working", current_task="TASK-7")
            await registry.heartbeat("forge", memory_mb=512.0)
            online = await registry.get_online()

    Args:
        connection: a shared :class:`~shipkit.connection.ConnectionManager`, or a config / URL /
            ``None`` for an owned connection.
        bucket_config: another bucket than ``beings_status`` (history 5, TTL 300 s).
    """

    DEFAULT_BUCKET = BEINGS_STATUS_BUCKET

    def __init__(
        self,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        bucket_config: KvBucketConfig | None = None,
    ) -> None:
        super().__init__(connection, bucket_config=bucket_config)
        self._registered_at: dict[str, float] = {}

    async def register(self, being_id: str, capabilities: list[str] | None = None, metadata: Any = None) -> BeingStatus:
        """Write a fresh status for ``being_id`` in state ``idle`` (replacing any previous one).

        The registry remembers when it registered the being, so later heartbeats without an
        explicit ``uptime_seconds`` report the time since then.
        """
        validate_kv_key(being_id, "being id")
        status = BeingStatus(being_id=being_id, capabilities=list(capabilities or []), metadata=metadata)
        await self.store.put(being_id, status)
        self._registered_at[being_id] = time.monotonic()
        return status

    async def update_status(
        self, being_id: str, state: BeingState | str, current_task: str | None = None
    ) -> BeingStatus:
        """Set state and current task (and refresh ``last_heartbeat``); return the new status.

        Raises:
            ConfigurationError: ``state`` is not idle|working|blocked|offline.
            KeyNotFoundError: the being is not registered (or its entry expired).
        """
        new_state = _state(state)
        return await self._modify(
            being_id,
            lambda status: status.model_copy(
                update={"state": new_state, "current_task": current_task, "last_heartbeat": utc_now_iso()}
            ),
        )

    async def heartbeat(
        self, being_id: str, *, uptime_seconds: float | None = None, memory_mb: float | None = None
    ) -> BeingStatus:
        """Refresh ``last_heartbeat`` (and with it the entry's TTL); return the new status.

        Args:
            being_id: the being.
            uptime_seconds: seconds the being has been up, stored as an integer (truncated).
                When omitted: the time since this registry registered the being, or the
                stored value unchanged if another process registered it.
            memory_mb: current memory use; the stored value is kept when omitted.

        Raises:
            KeyNotFoundError: the being is not registered (or its entry expired).
        """
        if uptime_seconds is None and being_id in self._registered_at:
            uptime_seconds = time.monotonic() - self._registered_at[being_id]
        update: dict[str, Any] = {}
        if uptime_seconds is not None:
            update["uptime_seconds"] = int(uptime_seconds)
        if memory_mb is not None:
            update["memory_mb"] = float(memory_mb)

        def beat(status: BeingStatus) -> BeingStatus:
            return status.model_copy(update={**update, "last_heartbeat": utc_now_iso()})

        return await self._modify(being_id, beat)

    async def unregister(self, being_id: str) -> None:
        """Delete the being's entry (watchers see a ``delete``); unknown ids are not an error."""
        validate_kv_key(being_id, "being id")
        await self.store.delete(being_id)
        self._registered_at.pop(being_id, None)

    async def get_status(self, being_id: str) -> BeingStatus | None:
        """The being's status, or ``None`` when it is not registered.

        Raises:
            SerializationError: the stored entry is not a valid BeingStatus.
        """
        validate_kv_key(being_id, "being id")
        value = await self.store.get(being_id)
        return None if value is None else self._parse(being_id, value)

    async def get_online(self) -> list[BeingStatus]:
        """Every being whose entry is still present (written within the bucket TTL), by id.

        As in the contract, "online" means "has an entry": a being that set its state to
        ``offline`` is listed too, filter on ``state`` if needed. Entries that are not a
        valid BeingStatus are logged (``beings.status_invalid``) and left out.
        """
        online: list[BeingStatus] = []
        for being_id, value in (await self.store.get_all()).items():
            try:
                online.append(self._parse(being_id, value))
            except SerializationError as exc:
                log.warning("beings.status_invalid", bucket=self.bucket, key=being_id, reason=str(exc)[:200])
        return online

    async def _modify(self, being_id: str, change: Callable[[BeingStatus], BeingStatus]) -> BeingStatus:
        validate_kv_key(being_id, "being id")

        def apply(value: Any | None) -> BeingStatus:
            if value is None:
                raise KeyNotFoundError(f"being {being_id!r} is not registered in bucket {self.bucket!r}")
            return change(self._parse(being_id, value))

        entry = await self.store.read_modify_write(being_id, apply)
        result: BeingStatus = entry.value
        return result

    def _parse(self, being_id: str, value: Any) -> BeingStatus:
        try:
            return BeingStatus.model_validate(value)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:3])
            raise SerializationError(f"kv {self.bucket}/{being_id}: invalid BeingStatus ({detail})") from exc
