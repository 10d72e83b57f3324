"""Work products (code, logs, documents) in the ``artifacts`` object bucket: :class:`ArtifactStore`.

Wire format (contract §2, §3): the object is named by the artifact; its description is
``type={type}, expedition={expedition}``, or ``type={type}`` when there is no expedition, exactly
as noesis-ship writes it, so either side can filter the other's artifacts by description.
"""

from __future__ import annotations

import os

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.models import ObjectMeta
from shipkit.primitives._bucket import BucketOwner
from shipkit.primitives.objects import ShipObjectStore

__all__ = ["DEFAULT_ARTIFACTS_BUCKET", "ArtifactStore", "artifact_description"]

DEFAULT_ARTIFACTS_BUCKET = "artifacts"


def artifact_description(type: str, expedition: str | None = None) -> str:
    """The description noesis-ship stores with an artifact: ``type=..., expedition=...``."""
    return f"type={type}" if expedition is None else f"type={type}, expedition={expedition}"


class ArtifactStore(BucketOwner[ShipObjectStore]):
    """Store and fetch artifacts by name.

    ::

        async with ArtifactStore("nats://localhost:4222") as arts:
            await arts.store_artifact("build.log", b"ok\\n", "log", expedition="exp-7")
            assert await arts.get("build.log") == b"ok\\n"

    Args:
        connection: a shared :class:`ConnectionManager`, or a :class:`NatsConfig` / URL / None
            for a connection this store owns.
        bucket: the object bucket (``artifacts``, as noesis-ship uses).
    """

    def __init__(
        self, connection: ConnectionManager | NatsConfig | str | None = None, *, bucket: str = DEFAULT_ARTIFACTS_BUCKET
    ) -> None:
        super().__init__(connection, lambda shared: ShipObjectStore(bucket, shared))

    async def store_artifact(self, name: str, data: bytes, type: str, expedition: str | None = None) -> ObjectMeta:
        """Store ``data`` as artifact ``name`` (replacing one of that name) with its type and expedition."""
        return await self.store.put(name, data, artifact_description(type, expedition))

    async def store_artifact_file(
        self, name: str, path: str | os.PathLike[str], type: str, expedition: str | None = None
    ) -> ObjectMeta:
        """Like :meth:`store_artifact`, streaming the file at ``path`` instead of bytes in memory."""
        return await self.store.put_file(name, path, artifact_description(type, expedition))

    async def get(self, name: str) -> bytes | None:
        """The artifact's bytes, or None if there is no such artifact (checksum verified)."""
        return await self.store.get(name)

    async def list(self) -> list[ObjectMeta]:
        """Every artifact, in the order they were last written (``[]`` if none)."""
        return await self.store.list()

    async def delete(self, name: str) -> None:
        """Delete an artifact.

        Raises:
            ObjectNotFoundError: there is no such artifact.
        """
        await self.store.delete(name)
