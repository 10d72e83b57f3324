"""Which workers serve a queue: :class:`WorkerRegistry` (advertised in a KV bucket).

Every running :class:`~shipkit.jobs.worker.JobWorker` puts one entry
``{worker}.{instance}`` into the queue's ``JOBS_{queue}_WORKERS`` bucket at start, renews it
every ``HEARTBEAT_S`` and deletes it at stop; the bucket's TTL (``ENTRY_TTL_S``) removes the
entry of a process that died. ``submit`` reads the entries of its worker name in one batch get
(cached for ``CACHE_S``): when there are some, the payload is checked against the advertised
JSON schema before anything is written; when there are none, it warns once per name that no
worker serves it (the job still waits durably for one).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import ValidationError

from shipkit import _jetstream as _js
from shipkit._jsonschema import schema_errors
from shipkit._publish import PipelinedPublisher
from shipkit.config import KvBucketConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import SerializationError, ShipkitError, translate_nats_errors
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs.models import WorkerInfo, now_ms
from shipkit.jobs.worker_spec import JobWorkerSpec
from shipkit.logging import get_logger

__all__ = ["WorkerRegistry", "info_for"]

log = get_logger(__name__)

ENTRY_TTL_S = 30.0
HEARTBEAT_S = 10.0
CACHE_S = 2.0


class WorkerRegistry:
    """Advertises this process's workers and looks up those of others."""

    def __init__(self, connection: ConnectionManager, layout: QueueLayout, publisher: PipelinedPublisher) -> None:
        self.connection = connection
        self._layout = layout
        self._publisher = publisher
        self._config = KvBucketConfig(
            bucket=layout.workers_bucket,
            history=1,
            ttl_s=ENTRY_TTL_S,
            storage=layout.storage,
            replicas=layout.replicas,
            description=f"shipkit job workers of queue {layout.name}",
        )
        self._mine: dict[str, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[str, tuple[float, list[WorkerInfo]]] = {}
        self._warned: set[str] = set()
        self._provisioned = False

    def _subject(self, key: str) -> str:
        return f"$KV.{self._layout.workers_bucket}.{key}"

    async def _provision(self) -> None:
        if not self._provisioned:
            await self.connection.ensure_kv_bucket(self._config)
            self._provisioned = True

    async def advertise(self, info: WorkerInfo) -> None:
        """Put ``info`` in the registry and keep renewing it until :meth:`withdraw`."""
        await self._provision()
        key = f"{info.worker}.{info.instance.rpartition(':')[2]}"
        self._mine[key] = info.model_dump_json().encode()
        await self._publisher.publish(self._subject(key), self._mine[key])
        if self._task is None:
            self._task = asyncio.create_task(self._renew(), name="shipkit-job-registry")

    async def withdraw(self, worker: str, instance: str) -> None:
        """Remove this process's entry for ``worker`` (it stops serving it)."""
        key = f"{worker}.{instance.rpartition(':')[2]}"
        if self._mine.pop(key, None) is not None and self.connection.is_connected:
            await self._publisher.publish(self._subject(key), b"", headers={_js.KV_OPERATION: "DEL"})
        if not self._mine and self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def stop(self) -> None:
        """Stop renewing (entries left expire with the bucket's TTL)."""
        self._mine.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for key, data in list(self._mine.items()):
                try:
                    await self._publisher.publish(self._subject(key), data)
                except ShipkitError as exc:  # disconnected: the next beat tries again, the TTL is 3 beats
                    log.warning("job.registry_renew_failed", key=key, error=str(exc))

    async def workers(self, worker: str = "*") -> list[WorkerInfo]:
        """Every live instance serving ``worker`` (``*``: all), sorted by name and instance."""
        await self._provision()
        found = await _js.multi_last(
            self.connection.client,
            f"KV_{self._layout.workers_bucket}",
            self._subject(f"{worker}.*"),
            self.connection.config.request_timeout_s,
        )
        infos = []
        for subject, data in found.items():
            if not data:
                continue  # a withdrawn entry's delete marker
            try:
                infos.append(WorkerInfo.model_validate_json(data))
            except ValidationError as exc:
                log.warning("job.registry_entry_undecodable", subject=subject, reason=str(exc)[:200])
        return sorted(infos, key=lambda info: (info.worker, info.instance))

    def known_max_attempts(self, worker: str) -> int | None:
        """The attempts the newest advertised ``worker`` gives a job, if :meth:`check_payload` looked it up."""
        cached = self._cache.get(worker)
        if not cached or not cached[1]:
            return None
        return max(cached[1], key=lambda info: info.started_at).max_attempts

    async def check_payload(self, worker: str, payload: Any) -> None:
        """Refuse ``payload`` if the workers serving ``worker`` advertise a schema it breaks; warn if none serve it.

        Raises:
            SerializationError: the payload does not match, naming the worker and the fields.
        """
        cached = self._cache.get(worker)
        now = asyncio.get_running_loop().time()
        if cached is None or now - cached[0] > CACHE_S:
            with translate_nats_errors(f"look up workers of {worker}"):
                cached = (now, await self.workers(worker))
            self._cache[worker] = cached
        infos = cached[1]
        if not infos:
            if worker not in self._warned:
                self._warned.add(worker)
                log.warning(
                    "job.no_worker", worker=worker, queue=self._layout.name, hint="the job waits until one starts"
                )
            return
        self._warned.discard(worker)
        newest = max(infos, key=lambda info: info.started_at)
        errors = schema_errors(payload, newest.payload_schema)
        if errors:
            raise SerializationError(
                f"payload for worker {worker!r} of queue {self._layout.name!r} does not match the schema its "
                f"workers advertise: {'; '.join(errors)} (nothing was queued)"
            )


def info_for(spec: JobWorkerSpec, queue: str, instance: str, max_attempts: int) -> WorkerInfo:
    """The registry entry of a :class:`~shipkit.jobs.worker_spec.JobWorkerSpec` run by ``instance``.

    ``max_attempts`` is what the worker gives a job that sets none (its own, else the queue's).
    """
    return WorkerInfo(
        worker=spec.worker,
        queue=queue,
        instance=instance,
        concurrency=spec.concurrency,
        priority_levels=spec.priority_levels,
        max_attempts=max_attempts,
        payload_schema=spec.adapter.json_schema(),
        started_at=now_ms(),
    )
