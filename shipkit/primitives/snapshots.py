"""Point-in-time copies of a being's state in the ``snapshots`` object bucket: :class:`BeingSnapshots`.

Wire format (contract §2, §3): object ``{being_id}_{YYYYMMDD_HHMMSS}`` (UTC), description = the
reason, body = compact JSON ``{"being_id", "reason", "state", "created"}`` in that order.

Ids never overwrite each other: noesis-ship silently replaces a snapshot taken in the same
second; shipkit stores the second one as ``{being_id}_{YYYYMMDD_HHMMSS}_2``, the third as
``..._3`` and so on. The server decides which name is free (create-only publish), so this holds
across processes too. The suffixed id is an ordinary object name: a seed reader restores it by
id and lists it like any other.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from shipkit._json import dumps, loads
from shipkit._names import validate_object_name
from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import SerializationError
from shipkit.models import ObjectMeta, parse_timestamp
from shipkit.primitives._bucket import BucketOwner
from shipkit.primitives.objects import ShipObjectStore

__all__ = ["DEFAULT_SNAPSHOTS_BUCKET", "BeingSnapshots", "parse_snapshot_id"]

DEFAULT_SNAPSHOTS_BUCKET = "snapshots"
_MAX_SAME_SECOND = 1000  # snapshots of one being within one second before take() gives up
_ID_RE = re.compile(r"^(?P<being>.+)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?$")


def parse_snapshot_id(snapshot_id: str) -> tuple[str, str, int] | None:
    """Split ``{being_id}_{YYYYMMDD_HHMMSS}[_{n}]`` into ``(being_id, stamp, n)`` (n is 1 without suffix).

    Returns None for a name that does not follow the pattern.
    """
    match = _ID_RE.match(snapshot_id)
    if match is None:
        return None
    return match["being"], match["stamp"], int(match["seq"] or 1)


class BeingSnapshots(BucketOwner[ShipObjectStore]):
    """Take, list and restore snapshots of beings' state.

    ::

        async with BeingSnapshots("nats://localhost:4222") as snaps:
            snapshot_id = await snaps.take("scout-1", {"step": 42}, "before upgrade")
            assert await snaps.restore(snapshot_id) == {"step": 42}

    Args:
        connection: a shared :class:`ConnectionManager`, or a :class:`NatsConfig` / URL / None
            for a connection these snapshots own.
        bucket: the object bucket (``snapshots``, as noesis-ship uses).
    """

    def __init__(
        self, connection: ConnectionManager | NatsConfig | str | None = None, *, bucket: str = DEFAULT_SNAPSHOTS_BUCKET
    ) -> None:
        super().__init__(connection, lambda shared: ShipObjectStore(bucket, shared))

    async def take(self, being_id: str, state: Any, reason: str) -> str:
        """Store ``state`` (any JSON value) and return the new snapshot id.

        Raises:
            InvalidNameError: empty ``being_id`` or one with control characters.
            SerializationError: ``state`` is not JSON-able.
            RevisionConflictError: more than 1000 snapshots of this being in one second.
        """
        validate_object_name(being_id, "being id")
        now = datetime.now(UTC)
        base = f"{being_id}_{now:%Y%m%d_%H%M%S}"
        body = dumps({"being_id": being_id, "reason": reason, "state": state, "created": now.isoformat()})
        meta = await self.store.create(
            base,
            body,
            description=reason,
            fallback_names=(f"{base}_{n}" for n in range(2, _MAX_SAME_SECOND + 1)),
        )
        return meta.name

    async def restore(self, snapshot_id: str) -> Any | None:
        """The ``state`` stored in the snapshot, or None if there is no such snapshot.

        Raises:
            SerializationError: the object is not a snapshot JSON with a ``state`` member.
            ChecksumMismatchError: the stored bytes are corrupt.
        """
        data = await self.store.get(snapshot_id)
        if data is None:
            return None
        document = loads(data, f"snapshot {snapshot_id}")
        if not isinstance(document, dict) or "state" not in document:
            raise SerializationError(f"snapshot {snapshot_id}: expected a JSON object with a 'state' member")
        return document["state"]

    async def list(self, being_id: str | None = None) -> list[ObjectMeta]:
        """Snapshots (of one being, or all), oldest first, newest last.

        Order is by the time in the id, then the same-second suffix; objects in the bucket whose
        names do not follow the id pattern are listed (only when ``being_id`` is None) by their
        ``created`` time.
        """
        entries = []
        for meta in await self.store.list():
            parsed = parse_snapshot_id(meta.name)
            if being_id is not None and (parsed is None or parsed[0] != being_id):
                continue
            stamp, seq = (parsed[1], parsed[2]) if parsed else (_stamp_of(meta.created), 1)
            entries.append(((stamp, seq, meta.name), meta))
        return [meta for _, meta in sorted(entries, key=lambda entry: entry[0])]

    async def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot.

        Raises:
            ObjectNotFoundError: there is no such snapshot.
        """
        await self.store.delete(snapshot_id)


def _stamp_of(created: str) -> str:
    """``YYYYMMDD_HHMMSS`` of an RFC 3339 time, to order foreign objects among snapshots."""
    try:
        moment = parse_timestamp(created).astimezone(UTC)
    except ValueError:
        return ""
    return f"{moment:%Y%m%d_%H%M%S}"
