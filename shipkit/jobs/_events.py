"""Announcing transitions: the state counters and the ``job.*`` events on the event bus.

Both are posted after the record's compare-and-set succeeded (the record is the truth) through
the :class:`~shipkit._publish.PipelinedPublisher`: a job never waits for them, and a post the
server did not confirm (a restart) is re-sent under the same ``Nats-Msg-Id`` (events: derived
from the record revision the transition wrote; counters: per coalesced increment), so nothing
is counted or announced twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from shipkit import _jetstream as _js
from shipkit._publish import PipelinedPublisher
from shipkit.errors import SerializationError
from shipkit.jobs._store import Counters
from shipkit.jobs.models import Job
from shipkit.models import utc_now_iso

EVENT_TYPES = (
    "job.queued",
    "job.running",
    "job.progress",
    "job.complete",
    "job.failed",
    "job.retrying",
    "job.cancelled",
    "job.dead",
)

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class EventEncoder:
    """Writes ``ShipEvent`` JSON (wire contract §1) byte for byte as ``ShipEvent.new(...).to_json()``.

    The constant parts (event type, source, version) are encoded once; per event only the
    timestamp, the payload and a fresh 8-hex-digit correlation id are written, instead of
    building and validating a pydantic model per transition.
    """

    def __init__(self, source: str) -> None:
        self._heads: dict[str, bytes] = {}
        self._middle = b'","source":' + _ANY.dump_json(source) + b',"payload":'

    def encode(self, event_type: str, payload: Any) -> bytes:
        """A fresh event of ``event_type`` carrying ``payload``, stamped now."""
        head = self._heads.get(event_type)
        if head is None:
            head = self._heads[event_type] = b'{"event_type":' + _ANY.dump_json(event_type) + b',"timestamp":"'
        try:
            body = _ANY.dump_json(payload)
        except PydanticSerializationError as exc:
            raise SerializationError(f"cannot encode ShipEvent as JSON: {exc}") from exc
        return b"".join(
            (
                head,
                utc_now_iso().encode(),
                self._middle,
                body,
                b',"correlation_id":"',
                b"%08x" % random.getrandbits(32),  # as new_correlation_id(): 8 random hex digits
                b'","version":"1.0"}',
            )
        )


class Announcer:
    """Counts every transition and publishes its ``ShipEvent`` on ``{event_prefix}.{event_type}``."""

    def __init__(
        self,
        publisher: PipelinedPublisher,
        counters: Counters,
        *,
        queue: str,
        events: bool,
        event_prefix: str,
        source: str,
        progress_events: bool = True,
        max_attempts_for: Callable[[str], int] | None = None,
    ) -> None:
        self._progress_events = progress_events
        self._max_attempts_for = max_attempts_for
        self._publisher = publisher
        self._counters = counters
        self._queue = queue
        self._events = events
        self._event_prefix = event_prefix
        self._encoder = EventEncoder(source)
        self._subjects = {event_type: f"{event_prefix}.{event_type}" for event_type in EVENT_TYPES}

    async def transition(self, before: str, job: Job, revision: int, event_type: str | None, **extra: Any) -> None:
        """Count ``before -> job.state`` (if it changed) and publish ``event_type`` (if given).

        ``revision`` is the record revision the transition wrote: it de-duplicates event re-sends.
        """
        if before != job.state.value:
            self._counters.add(before, job.state.value)
        if event_type == "job.progress" and not self._progress_events:
            return
        if event_type is not None and self._events:
            await self._post_event(event_type, job, extra, msg_id=self._msg_id(job, revision, event_type))

    async def bulk(self, before: str, jobs: list[Job], revisions: list[int], event_type: str) -> None:
        """Announce the same transition of many jobs (one counter increment for all)."""
        if not jobs:
            return
        self._counters.add(before, jobs[0].state.value, len(jobs))
        if self._events:
            for job, revision in zip(jobs, revisions, strict=True):
                await self._post_event(event_type, job, {}, msg_id=self._msg_id(job, revision, event_type))

    def _msg_id(self, job: Job, revision: int, event_type: str) -> str:
        """The event's ``Nats-Msg-Id``: the same for a re-send of one transition, different for any other.

        The queue name is part of it: queues share the event stream and number their jobs and
        record revisions alike, so ``JOB-001`` at revision 3 of two queues are two transitions.
        """
        return f"{self._queue}.{job.id}.{revision}.{event_type}"

    async def _post_event(self, event_type: str, job: Job, extra: dict[str, Any], *, msg_id: str) -> None:
        payload: dict[str, Any] = {
            "id": job.id,
            "queue": self._queue,
            "worker": job.worker,
            "state": job.state.value,
            "attempt": job.attempt,
            # a queued job's attempts are decided by the worker that claims it: say the best known
            "max_attempts": job.max_attempts
            if job.max_attempts is not None or self._max_attempts_for is None
            else self._max_attempts_for(job.worker),
        }
        if job.result_ref is not None and event_type == "job.complete":
            payload["result_ref"] = job.result_ref.model_dump()
        if extra:
            payload.update(extra)
        subject = self._subjects.get(event_type) or f"{self._event_prefix}.{event_type}"
        data = self._encoder.encode(event_type, payload)
        await self._publisher.post(subject, data, headers={_js.MSG_ID: msg_id}, what=subject)
