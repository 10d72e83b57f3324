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

    async def store(self, job_id: str, result: Any) -> tuple[Any, ResultRef | None]:
        """``(inline value, None)`` or ``(None, reference)``; :class:`SerializationError` if not JSON."""
        data = dumps(result)
        if len(data) <= self._inline_max:
            return pydantic_core.from_json(data), None  # the JSON value, as json.loads, faster
        bucket = await self.connection.ensure_object_store(self._config)
        with translate_nats_errors(f"put result {self._config.bucket}/{job_id}"):
            await bucket.put(job_id, data)
        digest = hashlib.sha256(data).hexdigest()
        return None, ResultRef(bucket=self._config.bucket, name=job_id, size=len(data), sha256=digest)

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
