"""Job results: inline in the record, or (over the limit) in the queue's object bucket: :class:`ResultStore`."""

from __future__ import annotations

import hashlib
from typing import Any

import nats.js.errors as js_errors
import pydantic_core

from shipkit._json import dumps, loads
from shipkit.config import ObjectStoreConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import ChecksumMismatchError, ObjectNotFoundError, translate_nats_errors
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs.models import ResultRef


class ResultStore:
    """Stores results of up to ``inline_max_bytes`` in the record and larger ones as objects."""

    def __init__(
        self,
        connection: ConnectionManager,
        layout: QueueLayout,
        *,
        inline_max_bytes: int,
    ) -> None:
        self.connection = connection
        self._layout = layout
        self._inline_max = inline_max_bytes
        self._config = ObjectStoreConfig(
            bucket=layout.results_bucket,
            description=f"large job results of queue {layout.name}",
            storage=layout.storage,
            replicas=layout.replicas,
        )

    async def store(self, job_id: str, result: Any, *, name: str | None = None) -> tuple[Any, ResultRef | None]:
        """``(inline value, None)`` or ``(None, reference)``; :class:`SerializationError` if not JSON.

        ``name`` is the object's name when stored by reference (default: the job id; a
        checkpoint uses ``{id}.checkpoint``, so it never overwrites the result).
        """
        data = dumps(result)
        if len(data) <= self._inline_max:
            return pydantic_core.from_json(data), None  # the JSON value, as json.loads, faster
        object_name = name or job_id
        bucket = await self.connection.ensure_object_store(self._config)
        with translate_nats_errors(f"put result {self._config.bucket}/{object_name}"):
            await bucket.put(object_name, data)
        digest = hashlib.sha256(data).hexdigest()
        return None, ResultRef(bucket=self._config.bucket, name=object_name, size=len(data), sha256=digest)

    async def delete(self, ref: ResultRef) -> None:
        """Remove a stored object (a no-op when it is gone already)."""
        bucket = await self.connection.ensure_object_store(self._config)
        with translate_nats_errors(f"delete {ref.bucket}/{ref.name}"):
            try:
                await bucket.delete(ref.name)
            except js_errors.NotFoundError:
                return

    async def fetch(self, job_id: str, ref: ResultRef) -> Any:
        """A stored result, checked against its SHA-256."""
        bucket = await self.connection.ensure_object_store(self._config)
        with translate_nats_errors(f"get result {ref.bucket}/{ref.name}"):
            try:
                found = await bucket.get(ref.name)
            except js_errors.ObjectNotFoundError as exc:
                raise ObjectNotFoundError(f"result object of job {job_id} is missing") from exc
        data = bytes(found.data or b"")
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ChecksumMismatchError(f"result object of job {job_id} does not match its SHA-256")
        return loads(data, f"result of job {job_id}")
