"""The one error root of shipkit and its tree.

Every failure a user can catch derives from :class:`ShipkitError`; exceptions from
``nats-py`` are translated at the boundary (``raise ... from exc``), so callers never
``import nats`` to handle an error::

    ShipkitError
    ├── ConfigurationError            bad spec, duplicate registration, bad option
    │   ├── InvalidNameError          empty name, wildcard/dot/space where none belongs (also ValueError)
    │   ├── ImportFromStringError     ``MODULE:ATTR`` cannot be imported or names no Service
    │   └── ScaffoldError             ``shipkit new`` cannot generate the project
    │       └── FilesExistError       it would overwrite files (nothing was written)
    ├── NatsServerError               the embedded nats-server cannot be found, started or stopped
    ├── NatsConnectionError           cannot reach or talk to the server
    │   ├── NotConnectedError         a primitive used before connect() / after close()
    │   └── StartupInterruptedError   a signal arrived while connecting or provisioning
    ├── NatsTimeoutError              an operation timed out (also builtin TimeoutError)
    ├── SerializationError            bytes that are not the JSON / shape expected (also ValueError)
    ├── PayloadTooLargeError          a message over the server's max_payload
    ├── JetStreamError                a JetStream API call failed (``err_code`` kept)
    │   ├── StreamNotFoundError       no stream captures a subject / stream missing (checked)
    │   ├── ClusterUnavailableError   no stream leader answered in time (election, node loss)
    │   ├── StreamExistsError         a stream with other settings already exists
    │   ├── BucketNotFoundError       KV or object bucket missing
    │   ├── RevisionConflictError     KV compare-and-set lost (create/update)
    │   └── ProvisioningError         verify mode found something missing
    ├── KeyNotFoundError              a KV key that must exist does not (also KeyError)
    ├── ObjectNotFoundError           an object that must exist does not
    ├── ChecksumMismatchError         an object's bytes do not match its stored SHA-256
    ├── JobStateError                 a job is not in a state that allows the operation
    │   └── LeaseLostError            this process no longer holds the job (taken over, cancelled, gone)
    └── ServiceError                  a request-reply handler's error, with a numeric code

``get`` of a missing key or object returns ``None``; every other failure raises one of these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nats.errors as _nats_errors
import nats.js.errors as _js_errors

__all__ = [
    "BucketNotFoundError",
    "ChecksumMismatchError",
    "ClusterUnavailableError",
    "ConfigurationError",
    "FilesExistError",
    "ImportFromStringError",
    "InvalidNameError",
    "JetStreamError",
    "JobStateError",
    "KeyNotFoundError",
    "LeaseLostError",
    "NatsConnectionError",
    "NatsServerError",
    "NatsTimeoutError",
    "NotConnectedError",
    "ObjectNotFoundError",
    "PayloadTooLargeError",
    "ProvisioningError",
    "RevisionConflictError",
    "ScaffoldError",
    "SerializationError",
    "ServiceError",
    "ShipkitError",
    "StartupInterruptedError",
    "StreamExistsError",
    "StreamNotFoundError",
    "as_shipkit_error",
    "translate_nats_errors",
]


class ShipkitError(Exception):
    """Root of every error shipkit raises."""


class ConfigurationError(ShipkitError):
    """A declaration or option is invalid; raised at registration or start, never per message."""


class InvalidNameError(ConfigurationError, ValueError):
    """A subject token, stream, bucket, consumer or key name is not allowed where it is used."""


class ImportFromStringError(ConfigurationError):
    """``MODULE:ATTR`` could not be imported or does not name a Service."""


class ScaffoldError(ConfigurationError):
    """A project cannot be generated: bad name, unknown template, or a broken template."""


class FilesExistError(ScaffoldError):
    """Generating would overwrite existing files; nothing was written.

    Attributes:
        paths: the files that already exist.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(
            f"refusing to overwrite {len(paths)} existing file(s): {shown}. "
            "Choose another --directory or remove them; nothing was written."
        )
        self.paths = list(paths)


class NatsServerError(ShipkitError):
    """The embedded server could not be found, started or stopped."""


class NatsConnectionError(ShipkitError):
    """The NATS server cannot be reached, refused us, or the connection closed."""


class NotConnectedError(NatsConnectionError):
    """A primitive was used before ``connect()`` or after ``close()``."""


class StartupInterruptedError(NatsConnectionError):
    """SIGINT or SIGTERM arrived while the service was connecting or provisioning; it did not start."""


class NatsTimeoutError(ShipkitError, TimeoutError):
    """An operation did not complete in time (request, publish ack, API call)."""


class SerializationError(ShipkitError, ValueError):
    """Bytes could not be decoded into, or a value encoded as, the expected JSON shape."""


class PayloadTooLargeError(ShipkitError, ValueError):
    """A message exceeds the server's ``max_payload``."""


class JetStreamError(ShipkitError):
    """A JetStream API call failed.

    Attributes:
        err_code: the server's JetStream error code when known (e.g. 10059 stream not found).
        status: the API status code when known.
    """

    def __init__(self, message: str, *, err_code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.err_code = err_code
        self.status = status


class StreamNotFoundError(JetStreamError):
    """No stream exists with that name, or none captures the subject published to."""


class ClusterUnavailableError(JetStreamError):
    """No stream leader answered in time: a leader election, a node loss, or a restarting server.

    Transient: publishes that need an ack are retried until ``NatsConfig.failover_timeout_s``
    passes before this is raised (see ``docs/connection.md``, "Running on a cluster").
    """


class StreamExistsError(JetStreamError):
    """A stream with that name exists with a conflicting configuration."""


class BucketNotFoundError(JetStreamError):
    """A KV or object-store bucket does not exist."""


class RevisionConflictError(JetStreamError):
    """A KV compare-and-set (``create``/``update``) lost against another writer."""


class ProvisioningError(JetStreamError):
    """In verify mode, a stream, consumer or bucket the code declares does not exist."""


class KeyNotFoundError(ShipkitError, KeyError):
    """A KV key that the operation requires does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "key not found"


class ObjectNotFoundError(ShipkitError):
    """An object that the operation requires does not exist."""


class ChecksumMismatchError(ShipkitError):
    """An object's bytes do not match the SHA-256 stored with it."""


class JobStateError(ShipkitError):
    """The operation is not allowed in the job's current state (e.g. ``complete`` of a queued job)."""


class LeaseLostError(JobStateError):
    """This process's hold on a running job ended: another worker took it over after the lease
    expired, or the record changed under it. Its result is not recorded."""


class ServiceError(ShipkitError):
    """An error reply of a request-reply service, or one a handler raises on purpose.

    Raise it from a handler to answer with a specific code; ``Client.request`` raises it
    when a service answers with an error.

    Attributes:
        code: numeric status code, HTTP-like (400 bad request, 404, 409, 429, 500 ...).
        message: one-line description sent to the caller.
        details: optional JSON-able detail (e.g. validation errors).
    """

    def __init__(self, code: int, message: str, *, details: object | None = None):
        super().__init__(f"{code}: {message}")
        self.code = int(code)
        self.message = message
        self.details = details


# JetStream API error codes (nats-server/server/errors.json); matched on code, never text.
JS_ERR_STREAM_NOT_FOUND = 10059
JS_ERR_STREAM_NAME_IN_USE = 10058
JS_ERR_STREAM_WRONG_LAST_SEQUENCE = 10071
JS_ERR_CONSUMER_NOT_FOUND = 10014
JS_ERR_NO_STREAM_MATCHES_SUBJECT = 10039
JS_ERR_NO_MESSAGE_FOUND = 10037


def _translate(exc: BaseException, what: str) -> ShipkitError | None:
    """Map one nats-py exception to its shipkit counterpart, or None if it is not one of theirs."""
    where = f"{what}: " if what else ""
    if isinstance(exc, _js_errors.KeyWrongLastSequenceError):
        # nats-py drops the server's err_code here; it is always "wrong last sequence".
        return RevisionConflictError(
            f"{where}revision conflict ({exc.description or exc})", err_code=JS_ERR_STREAM_WRONG_LAST_SEQUENCE
        )
    # nats-py's KV "not found" errors skip APIError.__init__ (no err_code attribute): match them first.
    if isinstance(exc, _js_errors.KeyDeletedError):
        return KeyNotFoundError(f"{where}key was deleted")
    if isinstance(exc, _js_errors.KeyNotFoundError):
        return KeyNotFoundError(f"{where}key not found")
    if isinstance(exc, _js_errors.ObjectNotFoundError | _js_errors.ObjectDeletedError):
        return ObjectNotFoundError(f"{where}object not found")
    if isinstance(exc, _js_errors.DigestMismatchError):
        return ChecksumMismatchError(f"{where}object digest mismatch")
    if isinstance(
        exc, (_js_errors.InvalidKeyError, _js_errors.InvalidBucketNameError, _js_errors.InvalidObjectNameError)
    ):
        return InvalidNameError(f"{where}{type(exc).__name__}")
    if isinstance(exc, _js_errors.BucketNotFoundError):
        return BucketNotFoundError(f"{where}bucket not found", err_code=getattr(exc, "err_code", None))
    if isinstance(exc, _js_errors.NoStreamResponseError):
        # Not "not found": an electing or restarting stream does not answer either. Callers
        # that must tell the two apart ask the JetStream API (shipkit._failover).
        return ClusterUnavailableError(
            f"{where}no stream answered (no leader / cluster unavailable, or no stream captures this subject)"
        )
    if isinstance(exc, _js_errors.APIError):
        code, status = getattr(exc, "err_code", None), getattr(exc, "code", None)
        text = f"{where}{getattr(exc, 'description', None) or exc} (err_code={code}, status={status})"
        if code in (JS_ERR_STREAM_NOT_FOUND, JS_ERR_NO_STREAM_MATCHES_SUBJECT):
            return StreamNotFoundError(text, err_code=code, status=status)
        if code == JS_ERR_STREAM_NAME_IN_USE:
            return StreamExistsError(text, err_code=code, status=status)
        if code == JS_ERR_STREAM_WRONG_LAST_SEQUENCE:
            return RevisionConflictError(text, err_code=code, status=status)
        return JetStreamError(text, err_code=code, status=status)
    if isinstance(exc, _js_errors.Error):
        return JetStreamError(f"{where}{exc}")
    if isinstance(exc, _nats_errors.MaxPayloadError):
        return PayloadTooLargeError(f"{where}message exceeds the server's max_payload")
    if isinstance(exc, (_nats_errors.BadSubjectError,)):
        return InvalidNameError(f"{where}invalid subject")
    if isinstance(exc, (_nats_errors.TimeoutError, TimeoutError)):
        return NatsTimeoutError(f"{where}timed out")
    if isinstance(exc, _nats_errors.NoRespondersError):
        return NatsTimeoutError(f"{where}no responders on this subject")
    if isinstance(
        exc,
        (
            _nats_errors.ConnectionClosedError,
            _nats_errors.NoServersError,
            _nats_errors.StaleConnectionError,
            _nats_errors.ConnectionReconnectingError,
            _nats_errors.ConnectionDrainingError,
            _nats_errors.AuthorizationError,
            _nats_errors.SecureConnFailedError,
            _nats_errors.OutboundBufferLimitError,
        ),
    ):
        return NatsConnectionError(f"{where}{type(exc).__name__}: {exc}")
    if isinstance(exc, _nats_errors.Error):
        return ShipkitError(f"{where}{type(exc).__name__}: {exc}")
    return None


def as_shipkit_error(exc: BaseException, what: str = "") -> BaseException:
    """The shipkit error for a nats-py exception (``__cause__`` set), or ``exc`` itself if it is not one."""
    if isinstance(exc, ShipkitError):
        return exc
    translated = _translate(exc, what)
    if translated is None:
        return exc
    translated.__cause__ = exc
    return translated


@contextmanager
def translate_nats_errors(what: str = "") -> Iterator[None]:
    """Translate nats-py exceptions raised inside the block into shipkit errors.

    Args:
        what: a short description of the operation and its target (``"kv.put beings_status/x"``)
            prefixed to the message, so the error says where it happened.
    """
    try:
        yield
    except ShipkitError:
        raise
    except (TimeoutError, _nats_errors.Error, _js_errors.Error) as exc:
        translated = _translate(exc, what)
        if translated is None:  # pragma: no cover - every nats error maps to something
            raise
        raise translated from exc
