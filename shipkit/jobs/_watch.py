"""Waiting for a job to finish without polling: :func:`wait_finished`.

An ordered consumer on the job's one KV subject (``deliver last per subject``) delivers the
current record first and then every write to it, so the waiter wakes on the write that
finishes the job; nats-py re-creates an ordered consumer after a reconnect, so a write made
while disconnected is still seen.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg
from nats.js import api

from shipkit import _jetstream as _js
from shipkit.connection import ConnectionManager
from shipkit.errors import KeyNotFoundError, NatsTimeoutError, SerializationError, translate_nats_errors
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs.models import Job


async def wait_finished(
    connection: ConnectionManager, layout: QueueLayout, job_id: str, timeout_s: float | None
) -> Job:
    """The job's record once it is complete, failed, dead or cancelled.

    Raises:
        KeyNotFoundError: there is no such job (or it was deleted while waiting).
        NatsTimeoutError: it did not finish within ``timeout_s`` (None: wait as long as it takes).
    """
    found: asyncio.Future[Job] = asyncio.get_running_loop().create_future()

    async def deliver(msg: Msg) -> None:
        if found.done():
            return
        if (msg.headers or {}).get(_js.KV_OPERATION) in ("DEL", "PURGE"):
            found.set_exception(KeyNotFoundError(f"job {job_id!r} was deleted from queue {layout.name!r}"))
            return
        try:
            job = Job.from_json(msg.data)
        except SerializationError as exc:
            found.set_exception(exc)
            return
        if job.is_finished:
            found.set_result(job)

    with translate_nats_errors(f"watch job {job_id}"):
        sub = await connection.jetstream.subscribe(
            layout.record_subject(job_id),
            stream=layout.kv_stream,
            cb=deliver,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        )
    try:
        with translate_nats_errors(f"watch job {job_id}"):
            info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq) and not found.done():
            raise KeyNotFoundError(f"no job {job_id!r} in queue {layout.name!r}")
        try:
            return await asyncio.wait_for(asyncio.shield(found), timeout_s)
        except TimeoutError:
            raise NatsTimeoutError(f"job {job_id} did not finish within {timeout_s:g}s") from None
    finally:
        if not found.done():
            found.cancel()
        if connection.is_connected:
            with translate_nats_errors(f"stop watching job {job_id}"):
                await sub.unsubscribe()
