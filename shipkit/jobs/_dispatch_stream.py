"""Dispatch on JetStream: the work-queue stream, one durable pull consumer per worker name,
delayed (``Nats-Schedule: @at``) and recurring (cron) schedules: :class:`DispatchStream`.

A dispatch message carries the job record as it was when dispatched plus its KV revision, so a
claimer can compare-and-set the record to ``running`` without reading it first; if the record
moved on (cancelled, retried), the compare-and-set fails and the claimer reads the record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import pydantic_core
from nats.aio.msg import Msg
from nats.js import api

from shipkit import _jetstream as _js
from shipkit._json import loads
from shipkit._publish import PipelinedPublisher
from shipkit.connection import ConnectionManager
from shipkit.errors import SerializationError, translate_nats_errors
from shipkit.jobs._layout import QueueLayout
from shipkit.jobs.models import Job
from shipkit.logging import get_logger

log = get_logger(__name__)

SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
PULL_NO_WAIT = b'{"batch":1,"no_wait":true}'
# no_wait with expires: answered as soon as a message is delivered, else 408 after 200 ms (ADR-13)
PULL_AWAITING_SIGNAL = b'{"batch":1,"no_wait":true,"expires":200000000}'
PULL_ATTEMPTS = 3  # pulls per pull_one while the store holds an undelivered message (another puller may win)


@dataclass(frozen=True, slots=True)
class DispatchBody:
    """A decoded dispatch message: a job (``job_id``) or a schedule firing (``cron``: the schedule)."""

    job_id: str | None
    dispatch: int
    revision: int | None
    job: Job | None
    cron: dict[str, Any] | None

    @classmethod
    def decode(cls, data: bytes) -> DispatchBody:
        """Parse a dispatch message body; :class:`SerializationError` when it is not one."""
        try:
            body = pydantic_core.from_json(data)  # a few times faster than json.loads
        except ValueError:
            body = loads(data, "job dispatch message")  # raises the SerializationError that says why
        if not isinstance(body, dict):
            raise SerializationError(f"job dispatch message: expected an object, got {type(body).__name__}")
        schedule = body.get("schedule")
        if isinstance(schedule, dict):
            return cls(job_id=None, dispatch=1, revision=None, job=None, cron=schedule)
        job_id = body.get("id")
        if not isinstance(job_id, str):
            raise SerializationError("job dispatch message: no job id")
        raw_job = body.get("job")
        job = Job.model_validate(raw_job) if isinstance(raw_job, dict) else None
        revision = body.get("rev")
        return cls(
            job_id=job_id,
            dispatch=int(body.get("dispatch", 1)),
            revision=revision if isinstance(revision, int) else None,
            job=job,
            cron=None,
        )


def encode_dispatch(job: Job, revision: int, record: bytes | None = None) -> bytes:
    """The dispatch message for ``job`` at KV ``revision``; ``record`` is ``job.to_json()`` if already made."""
    return b'{"id":%s,"dispatch":%d,"rev":%d,"job":%s}' % (
        json.dumps(job.id).encode(),
        job.dispatch,
        revision,
        job.to_json() if record is None else record,
    )


def at_header(run_at_ms: int) -> str:
    """``@at`` rounded *up* to the second (ADR-51 has second precision; never fire early)."""
    seconds = math.ceil(run_at_ms / 1000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"@at {stamp}"


class DispatchStream:
    """The queue's work-queue stream and the pull consumers on it."""

    def __init__(
        self,
        connection: ConnectionManager,
        layout: QueueLayout,
        publisher: PipelinedPublisher,
    ) -> None:
        self.connection = connection
        self._layout = layout
        self._publisher = publisher
        self._consumers: dict[str, float] = {}
        prefix = layout.subject_prefix
        self._config = api.StreamConfig(
            name=layout.dispatch_stream,
            description=f"shipkit job dispatch of queue {layout.name}",
            subjects=[f"{prefix}.dispatch.>", f"{prefix}.sched.>", f"{prefix}.cron.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType(layout.storage),
            num_replicas=layout.replicas,
            allow_msg_schedules=True,
            allow_direct=True,
            duplicate_window=120.0,
        )

    @property
    def _timeout_s(self) -> float:
        return self.connection.config.request_timeout_s

    async def provision(self) -> None:
        """Create the stream when missing; an existing one must be a work queue with schedules."""
        await _js.ensure_raw_stream(
            self.connection, self._config, {"retention": "workqueue", "allow_msg_schedules": True}
        )

    async def ensure_consumer(self, worker: str, lease_s: float, priority: str = "normal") -> str:
        """The durable pull consumer for ``worker`` at ``priority`` with ``ack_wait = lease_s``; made once."""
        name = self._layout.consumer_name(worker, priority)
        if self._consumers.get(name) == lease_s:
            return name
        config = api.ConsumerConfig(
            durable_name=name,
            filter_subject=self._layout.dispatch_subject(worker, priority),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=lease_s,
            max_deliver=-1,  # attempts are counted in the job record, not by the server
            max_ack_pending=-1,  # jobs waiting out a backoff hold an ack slot; never block new ones
            max_waiting=4096,
            description=f"shipkit job worker {worker}",
        )
        with translate_nats_errors(f"consumer {self._layout.dispatch_stream}/{name}"):
            await self.connection.jetstream.add_consumer(self._layout.dispatch_stream, config)
        self._consumers[name] = lease_s
        return name

    async def dispatch(self, job: Job, revision: int, record: bytes | None = None) -> None:
        """Put ``job`` in its worker's queue (de-duplicated per dispatch generation)."""
        subject = self._layout.dispatch_subject(job.worker, job.priority)
        headers = {_js.MSG_ID: f"{job.id}.{job.dispatch}"}
        await self._publisher.publish(subject, encode_dispatch(job, revision, record), headers=headers)

    async def dispatch_many(self, jobs: list[Job], revisions: list[int], records: list[bytes]) -> None:
        """:meth:`dispatch` for many jobs, pipelined (``records``: their ``to_json()``, made once)."""
        subjects: dict[tuple[str, str], str] = {}
        messages: list[tuple[str, bytes, dict[str, str] | None]] = []
        for job, revision, record in zip(jobs, revisions, records, strict=True):
            key = (job.worker, job.priority)
            subject = subjects.get(key) or subjects.setdefault(key, self._layout.dispatch_subject(*key))
            messages.append((subject, encode_dispatch(job, revision, record), {_js.MSG_ID: f"{job.id}.{job.dispatch}"}))
        await self._publisher.publish_many(messages)

    async def schedule_at(self, job: Job, revision: int, run_at_ms: int) -> None:
        """Have the server dispatch ``job`` at ``run_at_ms`` (an ADR-51 ``@at`` schedule)."""
        subject = self._layout.schedule_subject(job.id)
        headers = {
            SCHEDULE: at_header(run_at_ms),
            SCHEDULE_TARGET: self._layout.dispatch_subject(job.worker, job.priority),
            _js.MSG_ID: f"{job.id}.{job.dispatch}.at",
        }
        await self._publisher.publish(subject, encode_dispatch(job, revision), headers=headers)

    async def unschedule(self, job_id: str) -> None:
        """Remove a delayed job's pending schedule (a no-op if it already fired)."""
        subject = self._layout.schedule_subject(job_id)
        with translate_nats_errors(f"purge {subject}"):
            await self.connection.jetstream.purge_stream(self._layout.dispatch_stream, subject=subject)

    async def set_cron(self, name: str, schedule: str, worker: str, body: dict[str, Any]) -> None:
        """Create or replace the recurring schedule ``name`` (the server keeps one per subject)."""
        subject = self._layout.cron_subject(name)
        headers = {SCHEDULE: schedule, SCHEDULE_TARGET: self._layout.dispatch_subject(worker)}
        data = json.dumps(body, separators=(",", ":")).encode()
        with translate_nats_errors(f"schedule {subject}"):
            await self.connection.jetstream.publish(subject, data, headers=headers, timeout=self._timeout_s)

    async def remove_cron(self, name: str) -> bool:
        """Delete a recurring schedule; False when there was none."""
        subject = self._layout.cron_subject(name)
        with translate_nats_errors(f"purge {subject}"):
            info = await self.connection.jetstream.stream_info(self._layout.dispatch_stream, subjects_filter=subject)
            if not info.state.messages:
                return False
            await self.connection.jetstream.purge_stream(self._layout.dispatch_stream, subject=subject)
        return True

    async def crons(self) -> list[dict[str, Any]]:
        """The bodies of every recurring schedule, by name."""
        raw = await _js.multi_last(
            self.connection.client, self._layout.dispatch_stream, self._layout.cron_filter, self._timeout_s
        )
        return [loads(data, f"schedule {subject}") for subject, data in sorted(raw.items())]

    async def pull_one(self, worker: str, lease_s: float, priorities: tuple[str, ...] = ("normal",)) -> Msg | None:
        """The next message for ``worker`` if one is queued now (highest priority first), else None."""
        for priority in priorities:
            msg = await self._pull_level(worker, lease_s, priority)
            if msg is not None:
                return msg
        return None

    async def _pull_level(self, worker: str, lease_s: float, priority: str) -> Msg | None:
        """The next message for ``worker`` at ``priority`` if one is queued now, else None (never waits).

        nats-server sends the PubAck of a publish *before* the stream's consumers are signalled
        of the new message (asynchronously), so a ``no_wait`` pull right after a PubAck can
        answer 404 although the message is stored, and the consumer's ``num_pending`` can still
        say 0. The store itself is current, so an empty answer is checked against it (one round
        trip more, on the empty path only): when the last message on the worker's subject is
        past the consumer's last delivered sequence, it is pulled again, this time letting the
        server wait (briefly) until the consumer has been signalled.
        """
        consumer = await self.ensure_consumer(worker, lease_s, priority)
        stream = self._layout.dispatch_stream
        request = PULL_NO_WAIT
        for _ in range(PULL_ATTEMPTS):
            msg = await _js.pull_next(self.connection.client, stream, consumer, request, self._timeout_s)
            if msg is not None:
                return msg
            with translate_nats_errors(f"consumer info {stream}/{consumer}"):
                info, last = await asyncio.gather(
                    self.connection.jetstream.consumer_info(stream, consumer),
                    _js.direct_get_last(self._publisher, stream, self._layout.dispatch_subject(worker, priority)),
                )
            if last is None or last[1] <= info.delivered.stream_seq:
                return None  # everything on the subject was delivered already (held, or being settled)
            log.debug("job.pull_retried", consumer=consumer, last_seq=last[1], delivered=info.delivered.stream_seq)
            request = PULL_AWAITING_SIGNAL
        return None
