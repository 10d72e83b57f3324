"""Everything about job ids: their form (``{PREFIX}-{n:03}``), validation, sorting, and
:class:`IdAllocator`, which hands them out from the counter and binds idempotency keys to them."""

from __future__ import annotations

import asyncio
import hashlib
import re

from shipkit.errors import InvalidNameError, RevisionConflictError
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs._store import Counters, JobStore

_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def format_id(prefix: str, n: int) -> str:
    """``JOB-001`` for ``("JOB", 1)``; more digits once ``n`` needs them (``JOB-1000``)."""
    return f"{prefix}-{n:03}"


def id_number(job_id: str) -> int:
    """The counter value in a job id, for sorting (``-1`` when the id has no number)."""
    _, _, tail = job_id.rpartition("-")
    return int(tail) if tail.isdigit() else -1


def validate_job_id(job_id: str) -> str:
    """A job id usable as a KV key token: ``[A-Za-z0-9_-]+``."""
    if not isinstance(job_id, str) or not _ID_RE.match(job_id):
        raise InvalidNameError(f"job id {job_id!r} must match [A-Za-z0-9_-]+")
    return job_id


def idempotency_digest(key: str) -> str:
    """A KV-key-safe digest of a caller's idempotency key (which may hold any characters)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class IdAllocator:
    """Job ids from the counter: single, in blocks, or bound once to an idempotency key."""

    def __init__(self, counters: Counters, store: JobStore, layout: QueueLayout) -> None:
        self._counters = counters
        self._store = store
        self._layout = layout
        self._prefix = layout.prefix

    async def next(self) -> str:
        """A fresh id."""
        number = await self._counters.next_ids()
        if number is None:  # pragma: no cover - only a Nats-Msg-Id makes the counter report a duplicate
            raise RevisionConflictError("id counter reported a duplicate reservation")
        return format_id(self._prefix, number)

    async def block(self, count: int) -> list[str]:
        """``count`` consecutive fresh ids (one counter increment)."""
        last = await self._counters.next_ids(count)
        if last is None:  # pragma: no cover - see next()
            raise RevisionConflictError("id counter reported a duplicate reservation")
        return [format_id(self._prefix, last - count + 1 + i) for i in range(count)]

    async def for_key(self, key: str) -> str:
        """The id bound to an idempotency key: the existing one, or a fresh id bound now."""
        existing = await self._bound(key)
        if existing is not None:
            return existing
        number = await self._counters.next_ids(msg_id=f"idem.{idempotency_digest(key)}")
        if number is None:  # a concurrent submit with this key reserved an id: wait for its binding
            for _ in range(50):
                existing = await self._bound(key)
                if existing is not None:
                    return existing
                await asyncio.sleep(0.1)
            return await self._bind(key, await self.next())  # that submitter died
        return await self._bind(key, format_id(self._prefix, number))

    async def _bound(self, key: str) -> str | None:
        """The job id recorded for an idempotency key, if any."""
        found = await self._store.get_last(self._layout.idem_subject(idempotency_digest(key)))
        return found[0].decode() if found is not None else None

    async def _bind(self, key: str, job_id: str) -> str:
        """Record ``key -> job_id`` unless the key is taken; return the id the key maps to."""
        try:
            await self._store.create_key(self._layout.idem_subject(idempotency_digest(key)), job_id.encode())
        except RevisionConflictError:
            existing = await self._bound(key)
            if existing is not None:
                return existing
            raise
        return job_id
