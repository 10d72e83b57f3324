"""Riding through a leader election or a node loss: :func:`retry_transient` and :func:`publish_acked`.

While a replicated stream elects a new leader (1-8 s), or the node a client is connected to
dies, a JetStream publish gets "no responders" (no stream answered), no answer at all, or a
reconnecting connection. None of that means the stream is missing, so publishes that need an
ack (events, mutation events, job transitions, KV writes) are retried here with backoff until
``NatsConfig.failover_timeout_s`` passes. Every retried publish carries a ``Nats-Msg-Id``, so a
publish that was stored but whose ack was lost is stored once. When retrying ends:

- no stream captures the subject (asked of the JetStream API, which answers while a stream
  elects its leader) -> :class:`~shipkit.errors.StreamNotFoundError`, at once;
- otherwise -> :class:`~shipkit.errors.ClusterUnavailableError` ("no leader / cluster unavailable").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import nats.errors as nats_errors
from nats.aio.msg import Msg

from shipkit import _jetstream as _js
from shipkit._jetstream import check_ack
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    JS_ERR_NO_STREAM_MATCHES_SUBJECT,
    ClusterUnavailableError,
    NatsConnectionError,
    NatsTimeoutError,
    NotConnectedError,
    ShipkitError,
    StreamNotFoundError,
    as_shipkit_error,
)
from shipkit.logging import get_logger

__all__ = [
    "TRANSIENT_ERRORS",
    "first_then_retry",
    "new_msg_id",
    "no_stream_answered",
    "publish_acked",
    "retry_transient",
    "stream_captures",
]

log = get_logger(__name__)

T = TypeVar("T")

# What a restart, an election or a node loss makes fail for a moment.
TRANSIENT_ERRORS: tuple[type[ShipkitError], ...] = (NatsConnectionError, NatsTimeoutError, ClusterUnavailableError)

_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 0.5  # short: the stall after an election should be the election, not our backoff
_RETRY_ACK_TIMEOUT_S = 0.5  # how long a retried publish waits for its ack


# A random per-process prefix and a counter: unique across processes and restarts like a uuid4
# per message, without a urandom call on every publish.
_MSG_ID_PREFIX = uuid.uuid4().hex[:16]
_msg_ids = itertools.count(1)


def new_msg_id() -> str:
    """A fresh ``Nats-Msg-Id`` (the stream's duplicate window drops a repeat of it)."""
    return f"{_MSG_ID_PREFIX}{next(_msg_ids):x}"


async def retry_transient(
    what: str,
    action: Callable[[], Awaitable[T]],
    deadline_s: float,
    *,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> T:
    """Run ``action``, retrying transient failures with capped exponential backoff for ``deadline_s``.

    Raises:
        ClusterUnavailableError: still failing transiently when the deadline passed (chained to
            the last failure); other errors propagate at once.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    delay = _FIRST_DELAY_S
    attempts = 0
    while True:
        attempts += 1
        try:
            return await action()
        except NotConnectedError:
            raise  # used before connect() or after close(): waiting will not help
        except transient as exc:
            if loop.time() + delay > give_up:
                raise ClusterUnavailableError(
                    f"{what}: no leader / cluster unavailable: still failing after {deadline_s}s "
                    f"and {attempts} attempts ({exc})"
                ) from exc
            log.debug("failover.retrying", what=what, error=str(exc), delay_s=delay, attempt=attempts)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)


async def first_then_retry(
    what: str,
    action: Callable[[], Awaitable[T]],
    deadline_s: float,
    *,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> T:
    """``action()`` once directly, the common case, without the retry loop's frames on every call.

    On a transient failure it is retried by :func:`retry_transient` under what is left of
    ``deadline_s``; :class:`NotConnectedError` (used before connect or after close) is raised at once.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await action()
    except NotConnectedError:
        raise
    except transient:
        pass
    remaining_s = max(deadline_s - (loop.time() - started), 0.0)
    return await retry_transient(what, action, remaining_s, transient=transient)


async def stream_captures(connection: ConnectionManager, subject: str) -> bool | None:
    """Whether some stream captures ``subject``; None when the JetStream API did not answer."""
    request = json.dumps({"subject": subject}).encode()
    try:
        msg = await connection.client.request("$JS.API.STREAM.NAMES", request, timeout=1.0)
        answer = json.loads(msg.data) if msg.data else {}
    except Exception as exc:  # no meta leader, reconnecting, unreadable: we do not know
        log.debug("failover.stream_check_unanswered", subject=subject, error=f"{type(exc).__name__}: {exc}")
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is not None:
        return None
    return bool(answer.get("streams"))


async def no_stream_answered(connection: ConnectionManager, subject: str, what: str) -> NoReturn:
    """No stream answered a publish: missing (checked) or electing; raise which."""
    if await stream_captures(connection, subject) is False:
        raise StreamNotFoundError(
            f"{what}: no stream captures subject {subject!r}", err_code=JS_ERR_NO_STREAM_MATCHES_SUBJECT
        )
    raise ClusterUnavailableError(f"{what}: no stream answered (no leader / cluster unavailable)")


async def publish_acked(
    connection: ConnectionManager,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    what: str = "",
    msg_id: str | None = None,
) -> dict[str, Any]:
    """A JetStream publish whose ack is awaited, retried through elections; the PubAck as a dict.

    Args:
        connection: the connection manager (its config's ``failover_timeout_s`` bounds retrying).
        subject / data / headers: the message.
        what: the operation, for error messages (default ``publish {subject}``).
        msg_id: the ``Nats-Msg-Id``; a fresh one when neither this nor ``headers`` has one.

    Raises:
        StreamNotFoundError: no stream captures ``subject``.
        ClusterUnavailableError: no leader answered within the failover deadline.
        JetStreamError: the stream refused the message (wrong last sequence, too large ...).
    """
    what = what or f"publish {subject}"
    sent = dict(headers or {})
    sent.setdefault(_js.MSG_ID, msg_id or new_msg_id())
    config = connection.config
    timeout_s = config.request_timeout_s

    async def attempt() -> dict[str, Any]:
        nonlocal timeout_s
        try:
            msg = await _request_unless_reconnected(connection, subject, data, sent, timeout_s, what)
        except nats_errors.NoRespondersError:
            await no_stream_answered(connection, subject, what)
        except Exception as exc:
            failure = as_shipkit_error(exc, what)
            if isinstance(failure, NatsTimeoutError):
                # Retries wait less for their ack: during an election an unanswered attempt only
                # delays the one that will be answered (the Nats-Msg-Id makes sending again safe).
                timeout_s = min(timeout_s, _RETRY_ACK_TIMEOUT_S)
            raise failure from exc
        try:
            return check_ack(msg, what)
        except ClusterUnavailableError:
            await no_stream_answered(connection, subject, what)

    return await first_then_retry(what, attempt, config.failover_timeout_s)


async def _request_unless_reconnected(
    connection: ConnectionManager, subject: str, data: bytes, headers: dict[str, str], timeout_s: float, what: str
) -> Msg:
    """The reply to a request, or :class:`NatsTimeoutError` as soon as the connection was re-established.

    A publish sent just before the connection broke is never answered; without this race its
    sender would wait out the whole request timeout before sending again.
    """
    reconnected = connection.next_reconnect()
    request = asyncio.ensure_future(connection.client.request(subject, data, timeout=timeout_s, headers=headers))
    racing: set[asyncio.Future[Any]] = {request, reconnected}
    try:
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not request.done():
            request.cancel()  # the outer task was cancelled, or the connection came back first
    if request not in done:
        raise NatsTimeoutError(f"{what}: the connection was re-established while waiting for the ack")
    return request.result()
