"""Thin JetStream helpers beyond nats-py's conveniences, shared by the primitives and the jobs.

Header names and control-message statuses, direct gets (one round trip each, headers under
our control), batch "last message per subject" reads, pull requests on the raw
``$JS.API.CONSUMER.MSG.NEXT`` subject, and stream provisioning for the features nats-py's
``StreamConfig`` carries but shipkit's does not (work-queue retention with message schedules,
counter streams). The pipelined publisher lives next door in :mod:`shipkit._publish`; JetStream
API error codes live in the error table of :mod:`shipkit.errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Protocol

import nats.js.errors as js_errors
import pydantic_core
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from shipkit.connection import ConnectionManager
from shipkit.errors import (
    ClusterUnavailableError,
    JetStreamError,
    NatsTimeoutError,
    ProvisioningError,
    StreamExistsError,
    StreamNotFoundError,
    translate_nats_errors,
)
from shipkit.logging import get_logger

log = get_logger(__name__)


class Requester(Protocol):
    """Anything that sends a request and returns the reply message."""

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout_s: float | None = None
    ) -> Msg:
        """Send and await the reply."""
        ...


EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
MSG_ID = "Nats-Msg-Id"
KV_OPERATION = "KV-Operation"
STATUS = "Status"
DESCRIPTION = "Description"

# Statuses of JetStream control messages (headers only, no body).
STATUS_NO_MESSAGES = "404"  # a pull or direct get found nothing
STATUS_REQUEST_EXPIRED = "408"  # a pull request's expiry passed unfilled
STATUS_NO_RESPONDERS = "503"  # no stream answered (missing, allow_direct off, or restarting)
STATUS_END_OF_BATCH = "204"
PULL_ENDED = frozenset({STATUS_NO_MESSAGES, STATUS_REQUEST_EXPIRED})  # a pull that simply got nothing


def check_ack(msg: Msg, what: str) -> dict[str, Any]:
    """The PubAck of a JetStream publish as a dict; raise the shipkit error for an error answer."""
    headers = msg.headers
    if headers and not msg.data and headers.get(STATUS) == STATUS_NO_RESPONDERS:
        raise ClusterUnavailableError(
            f"{what}: no stream answered (no leader / cluster unavailable, or no stream captures this subject)"
        )
    try:
        answer: dict[str, Any] = pydantic_core.from_json(msg.data)  # a few times faster than json.loads
    except ValueError as exc:
        raise JetStreamError(f"{what}: unreadable acknowledgement {msg.data[:80]!r}") from exc
    if not isinstance(answer, dict):
        raise JetStreamError(f"{what}: unreadable acknowledgement {msg.data[:80]!r}")
    error = answer.get("error")
    if error is not None:
        with translate_nats_errors(what):
            raise js_errors.APIError.from_error(error)
    return answer


def pull_next_subject(stream: str, consumer: str) -> str:
    """The API subject a pull request for ``stream``'s consumer ``consumer`` is published to."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def status_of(msg: Msg) -> str | None:
    """The ``Status`` header of a JetStream control message, or None for a data message."""
    headers = msg.headers
    if not headers or msg.data:
        return None
    status = headers.get(STATUS)
    return str(status) if status else None


async def direct_get_last(requester: Requester, stream: str, subject: str) -> tuple[bytes, int] | None:
    """The last message on ``subject`` and its stream sequence; None when there is none or it is a delete."""
    msg = await requester.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"")
    headers = msg.headers or {}
    status = headers.get(STATUS)
    if status == STATUS_NO_MESSAGES:
        return None
    if status == STATUS_NO_RESPONDERS:
        raise StreamNotFoundError(
            f"direct get {stream} {subject}: no stream answered (allow_direct off, or restarting)"
        )
    if status:
        raise JetStreamError(f"direct get {stream} {subject}: status {status} {headers.get(DESCRIPTION, '')}")
    if headers.get(KV_OPERATION) in ("DEL", "PURGE"):
        return None
    return msg.data, int(headers["Nats-Sequence"])


async def multi_last(nc: Client, stream: str, subject_filter: str, timeout_s: float) -> dict[str, bytes]:
    """The last message of every subject matching ``subject_filter`` in one batch direct get.

    One request, however many subjects match (the counters: a few dozen at most).
    """
    inbox = nc.new_inbox()
    found: dict[str, bytes] = {}
    done = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        headers = msg.headers or {}
        status = status_of(msg)
        if status is None:
            found[headers.get("Nats-Subject", msg.subject)] = msg.data
        elif not done.done():
            # 204 = end of batch; 404 = nothing matches; anything else is an error.
            done.set_result(status)

    request = json.dumps({"multi_last": [subject_filter], "batch": 10_000}).encode()
    with translate_nats_errors(f"batch get {stream} {subject_filter}"):
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
            try:
                status = await asyncio.wait_for(done, timeout_s)
            except TimeoutError:
                raise NatsTimeoutError(f"batch get {stream} {subject_filter}: timed out") from None
        finally:
            await sub.unsubscribe()
    if status not in (STATUS_END_OF_BATCH, STATUS_NO_MESSAGES):
        raise JetStreamError(f"batch get {stream} {subject_filter}: status {status}")
    return found


async def pull_next(nc: Client, stream: str, consumer: str, request: bytes, timeout_s: float) -> Msg | None:
    """One pull request (``request``: its JSON body) for one message; None when the server had none.

    Raises:
        NatsTimeoutError: the server did not answer within ``timeout_s``.
        JetStreamError: the server answered with an error status.
    """
    inbox = nc.new_inbox()
    with translate_nats_errors(f"pull {stream}/{consumer}"):
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(pull_next_subject(stream, consumer), request, reply=inbox)
            try:
                msg = await sub.next_msg(timeout=timeout_s)
            except TimeoutError:
                raise NatsTimeoutError(f"pull {consumer}: no answer from the server") from None
        finally:
            await sub.unsubscribe()
    status = status_of(msg)
    if status is None:
        return msg
    if status in PULL_ENDED:
        return None
    raise JetStreamError(f"pull {consumer}: status {status} {(msg.headers or {}).get(DESCRIPTION, '')}")


def replica_drift(declared: int | None, actual: int | None) -> dict[str, tuple[Any, Any]]:
    """``{"num_replicas": (declared, actual)}`` when they differ, else empty."""
    want, have = declared or 1, actual or 1
    return {"num_replicas": (want, have)} if want != have else {}


async def ensure_raw_stream(manager: ConnectionManager, config: api.StreamConfig, required: dict[str, Any]) -> None:
    """Create ``config``'s stream when missing (or verify it exists) and check ``required`` settings.

    An existing stream is used as it is; settings in ``required`` that differ are a
    :class:`ProvisioningError` (the queue cannot work without them); other replicas than declared
    are a drift warning (refused in verify mode); others are not compared. A stream declared at
    R1 gets the manager's ``replicas`` setting.
    """
    js = manager.jetstream
    name = str(config.name)
    if manager.replicas is not None and (config.num_replicas or 1) == 1:
        config = dataclasses.replace(config, num_replicas=manager.replicas)
    try:
        with translate_nats_errors(f"stream info {name}"):
            info = await js.stream_info(name)
    except StreamNotFoundError:
        if manager.provision == "verify":
            raise ProvisioningError(
                f"stream {name!r} does not exist and provision mode is 'verify': create it with your tooling"
            ) from None
        try:
            with translate_nats_errors(f"create stream {name}"):
                info = await js.add_stream(config)
            log.info("stream.provisioned", stream=name, subjects=config.subjects)
        except StreamExistsError:  # lost a creation race: use the winner's
            with translate_nats_errors(f"stream info {name}"):
                info = await js.stream_info(name)
    manager._report_drift("stream.drift", name, replica_drift(config.num_replicas, info.config.num_replicas))
    wrong = {
        key: (want, getattr(getattr(info.config, key, None), "value", getattr(info.config, key, None)))
        for key, want in required.items()
        if getattr(getattr(info.config, key, None), "value", getattr(info.config, key, None)) != want
    }
    if wrong:
        raise ProvisioningError(
            f"stream {name!r} exists with settings the job queue cannot work with: "
            + ", ".join(f"{k}={have!r} (need {want!r})" for k, (want, have) in wrong.items())
        )
