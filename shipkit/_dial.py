"""The first connection to NATS under one deadline, and an error that says what failed: :func:`dial`.

nats-py's ``connect()`` can hang: with reconnects enabled, a failed TLS handshake closes the
transport and ``wait_closed()`` never returns. So the whole first connection (every attempt on
every server) runs under ``connect_timeout_s``, and an error that retrying cannot fix (an
untrusted certificate, rejected credentials) ends it at once. The failure names the servers
(secrets redacted) and the cause, with a hint only where one helps.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import nats.errors as nats_errors
from nats.aio.client import Client

from shipkit.config import NatsConfig, _redact_url
from shipkit.errors import NatsConnectionError
from shipkit.logging import get_logger

__all__ = ["ConnectErrors", "describe_failure", "dial"]

log = get_logger(__name__)

_CLOSE_S = 0.5  # closing a half-open client can hang on the same wait_closed(); bound it


class ConnectErrors:
    """What nats-py reported through ``error_cb`` while the first connection was being made."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []
        self.fatal = asyncio.Event()

    def add(self, exc: BaseException) -> None:
        """Remember ``exc``; one that no retry can fix ends the attempt at once."""
        if len(self.seen) < 5 and all(repr(e) != repr(exc) for e in self.seen):
            self.seen.append(exc)
        if _is_fatal(exc):
            self.fatal.set()


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError | nats_errors.AuthorizationError) or "authorization" in str(exc).lower()


async def dial(
    config: NatsConfig,
    options: dict[str, Any],
    errors: ConnectErrors,
) -> Client:
    """Connect a new client with ``options`` within ``config.connect_timeout_s``, or raise.

    Raises:
        NatsConnectionError: no server accepted the connection in time; see :func:`describe_failure`.
    """
    nc = Client()
    attempt = asyncio.ensure_future(nc.connect(**options))
    fatal = asyncio.ensure_future(errors.fatal.wait())
    try:
        done, _ = await asyncio.wait(
            {attempt, fatal}, timeout=config.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:  # cancelled (a signal while connecting): leave nothing running
        await _abandon(nc, attempt)
        raise
    finally:
        fatal.cancel()
    if attempt in done and attempt.exception() is None:
        return nc
    cause = attempt.exception() if attempt in done else None
    await _abandon(nc, attempt)
    raise NatsConnectionError(describe_failure(config, errors.seen, cause, timed_out=not done)) from (
        cause or (errors.seen[-1] if errors.seen else None)
    )


async def _abandon(nc: Client, attempt: asyncio.Future[Any]) -> None:
    """Stop a connection attempt and its client without waiting on a transport that never closes."""
    attempt.cancel()
    # Bounded: nats-py may hold on to a cancellation until its own per-attempt timeout.
    await asyncio.wait({attempt}, timeout=_CLOSE_S)
    if attempt.done() and not attempt.cancelled():
        attempt.exception()  # retrieved: its outcome is already in the error being raised
    try:
        await asyncio.wait_for(nc.close(), _CLOSE_S)
    except (TimeoutError, nats_errors.Error, OSError) as exc:
        log.debug("nats.abandon_close_failed", error=f"{type(exc).__name__}: {exc}")
    task = getattr(nc, "_reconnection_task", None)
    if task is not None:
        task.cancel()


def describe_failure(
    config: NatsConfig, seen: list[BaseException], cause: BaseException | None, *, timed_out: bool
) -> str:
    """One line: which servers, what failed, and a hint where one helps (no secrets)."""
    servers = ", ".join(_redact_url(s) for s in config.servers)
    head = f"could not connect to NATS at {servers}"
    causes = [*seen, *([cause] if cause is not None else [])]
    verify = next((e for e in causes if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        return (
            f"{head}: the server's TLS certificate is not trusted ({verify.verify_message or verify}); "
            "pass the CA that signed it with --tls-ca (NatsConfig.tls_ca_file)"
        )
    tls = next((e for e in causes if isinstance(e, ssl.SSLError)), None)
    tls_reason = (tls.reason or str(tls)) if tls is not None else None
    # Under TLS 1.3 a server refusing a client without a certificate may just reset the
    # connection after the handshake: the client then sees a reset, not an SSL alert.
    reset = next((e for e in causes if isinstance(e, ConnectionResetError | BrokenPipeError)), None)
    if tls_reason is None and reset is not None and config.uses_tls and config.tls_cert_file is None:
        tls_reason = f"the server reset the connection: {reset}"
    if tls_reason is not None:
        return (
            f"{head}: TLS handshake failed ({tls_reason}); if the server requires a client "
            "certificate pass --tls-cert and --tls-key (NatsConfig.tls_cert_file / tls_key_file)"
        )
    if any(_is_fatal(e) for e in causes):
        return f"{head}: authorization violation: the server rejected the credentials"
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return f"{head}: connection refused (is a server running? `shipkit server` starts one)"
    detail = "; ".join(f"{type(e).__name__}: {e}" for e in causes if str(e)) or "no server answered"
    if timed_out:
        return f"{head}: timed out after {config.connect_timeout_s}s ({detail})"
    return f"{head}: {detail} (is a server running? `shipkit server` starts one)"
