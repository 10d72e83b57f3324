"""Waiting for a job to finish without polling: :func:`wait_finished`.

The waiter subscribes (core NATS) to the job's KV subject, so it sees every write to the record
the moment it is published, then reads the record once. A write seen on the subject that
finishes the job is confirmed by a direct get of the stored record (a compare-and-set the
stream refused is still delivered to core subscribers), so only a stored end state is
returned. No JetStream consumer is created per wait: a wait costs a subscription and two
direct gets. Writes published while the connection was down are not seen on the subject;
the record is therefore read again every ``RESYNC_S`` as a safety net (one direct get), which
bounds the delay of a wait across a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg

from shipkit import _jetstream as _js
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    KeyNotFoundError,
    NatsTimeoutError,
    SerializationError,
    ShipkitError,
    translate_nats_errors,
)
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._store import JobStore
from shipkit.jobs.models import Job

RESYNC_S = 2.0


async def wait_finished(
    connection: ConnectionManager, layout: QueueLayout, store: JobStore, job_id: str, timeout_s: float | None
) -> Job:
    """The job's record once it is complete, failed, dead or cancelled.

    Raises:
        KeyNotFoundError: there is no such job (or it was deleted while waiting).
        NatsTimeoutError: it did not finish within ``timeout_s`` (None: wait as long as it takes).
    """
    changed = asyncio.Event()

    async def on_write(msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get(_js.KV_OPERATION) in ("DEL", "PURGE"):
            changed.set()
            return
        try:
            if Job.from_json(msg.data).is_finished:
                changed.set()
        except SerializationError:
            changed.set()  # not ours to judge: the stored record decides

    with translate_nats_errors(f"watch job {job_id}"):
        sub = await connection.client.subscribe(layout.record_subject(job_id), cb=on_write)
    try:
        return await asyncio.wait_for(_until_finished(store, layout, job_id, changed), timeout_s)
    except TimeoutError:
        raise NatsTimeoutError(f"job {job_id} did not finish within {timeout_s:g}s") from None
    finally:
        if connection.is_connected:
            with contextlib.suppress(ShipkitError), translate_nats_errors(f"stop watching job {job_id}"):
                await sub.unsubscribe()


async def _until_finished(store: JobStore, layout: QueueLayout, job_id: str, changed: asyncio.Event) -> Job:
    seen = False
    while True:
        changed.clear()  # before the read: a write landing after it wakes the next wait
        found = await store.get(job_id)
        if found is None:
            what = "was deleted from" if seen else "is not in"
            raise KeyNotFoundError(f"job {job_id!r} {what} queue {layout.name!r}")
        if found[0].is_finished:
            return found[0]
        seen = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), RESYNC_S)
