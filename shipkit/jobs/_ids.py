"""Job ids (``{PREFIX}-{n:03}``) and the KV keys derived from them."""

from __future__ import annotations

import hashlib
import re

from shipkit.errors import InvalidNameError

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_]+$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_prefix(prefix: str) -> str:
    """An id prefix: letters, digits and ``_`` (the ``-`` separates it from the number)."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise InvalidNameError(f"job id prefix {prefix!r} must match [A-Za-z0-9_]+")
    return prefix


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
