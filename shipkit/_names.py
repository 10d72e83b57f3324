"""Validation of the names shipkit puts on the wire: subject tokens, subjects, streams, buckets, keys.

Every public entry point validates its names before anything is sent, so a wildcard or a dot
where none belongs fails with a message that says which name and why.
"""

from __future__ import annotations

import re
import unicodedata

from shipkit.errors import InvalidNameError

# Matched with fullmatch: "$" would also accept a trailing newline.
_BUCKET_RE = re.compile(r"[A-Za-z0-9_-]+")
_KV_KEY_RE = re.compile(r"[-/_=.A-Za-z0-9]+")
_SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_CONSUMER_ILLEGAL_RE = re.compile(r"[.*>\s/\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control chars too
_FORBIDDEN_IN_TOKEN = frozenset(".*>")
_FORBIDDEN_IN_STREAM = frozenset(".*>/\\")


def _forbidden(value: str, forbidden: frozenset[str]) -> list[str]:
    """The forbidden characters in ``value``, whitespace and control characters (NUL ...) included."""
    return sorted({c for c in value if c in forbidden or c.isspace() or _is_control(c)})


def _is_control(char: str) -> bool:
    # NUL and friends are not whitespace, but the server splits or rejects protocol lines on them.
    return unicodedata.category(char) in ("Cc", "Cs")


def _describe(value: object) -> str:
    return repr(value)


def validate_token(value: str, what: str) -> str:
    """One subject token: non-empty, no whitespace, dots or wildcards (``*``, ``>``)."""
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} must be a non-empty string, got {_describe(value)}")
    bad = _forbidden(value, _FORBIDDEN_IN_TOKEN)
    if bad:
        raise InvalidNameError(
            f"{what} {_describe(value)} may not contain {', '.join(repr(c) for c in bad)} "
            "(whitespace, '.', '*' and '>' have meaning in NATS subjects)"
        )
    return value


def validate_subject(value: str, what: str, *, wildcards: bool = False) -> str:
    """A dotted subject; ``*`` (a whole token) and ``>`` (last token) only when ``wildcards``."""
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} must be a non-empty subject, got {_describe(value)}")
    tokens = value.split(".")
    for index, token in enumerate(tokens):
        if not token:
            raise InvalidNameError(f"{what} {_describe(value)} has an empty token (leading, trailing or '..')")
        if any(c.isspace() for c in token):
            raise InvalidNameError(f"{what} {_describe(value)} may not contain whitespace")
        if any(_is_control(c) for c in token):
            raise InvalidNameError(f"{what} {_describe(value)} may not contain control characters (NUL, ...)")
        if token in ("*", ">"):
            if not wildcards:
                raise InvalidNameError(f"{what} {_describe(value)} may not contain wildcards ('*', '>')")
            if token == ">" and index != len(tokens) - 1:
                raise InvalidNameError(f"{what} {_describe(value)}: '>' must be the last token")
        elif "*" in token or ">" in token:
            raise InvalidNameError(f"{what} {_describe(value)}: '*' and '>' must stand alone as a token")
    return value


def validate_stream_name(value: str, what: str = "stream name") -> str:
    """A stream or consumer name: non-empty, no whitespace, ``.``, ``*``, ``>``, ``/`` or ``\\``."""
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} must be a non-empty string, got {_describe(value)}")
    bad = _forbidden(value, _FORBIDDEN_IN_STREAM)
    if bad:
        raise InvalidNameError(f"{what} {_describe(value)} may not contain {', '.join(repr(c) for c in bad)}")
    return value


validate_consumer_name = validate_stream_name


def validate_bucket_name(value: str, what: str = "bucket name") -> str:
    """A KV or object bucket: letters, digits, ``_`` and ``-`` only."""
    if not isinstance(value, str) or not _BUCKET_RE.fullmatch(value):
        raise InvalidNameError(f"{what} {_describe(value)} must match [A-Za-z0-9_-]+")
    return value


def validate_kv_key(value: str, what: str = "key") -> str:
    """A KV key: ``[-/_=.A-Za-z0-9]+``, not starting or ending with ``.``."""
    if not isinstance(value, str) or not _KV_KEY_RE.fullmatch(value) or value.startswith(".") or value.endswith("."):
        raise InvalidNameError(f"{what} {_describe(value)} must match [-/_=.A-Za-z0-9]+ and not start or end with '.'")
    if ".." in value:
        raise InvalidNameError(f"{what} {_describe(value)} may not contain '..'")
    return value


def validate_kv_key_pattern(value: str, what: str = "key pattern") -> str:
    """A KV key filter for watches: a key, or a dotted pattern with ``*`` / ``>`` tokens."""
    validate_subject(value, what, wildcards=True)
    for token in value.split("."):
        if token not in ("*", ">"):
            validate_kv_key(token, what)
    return value


def validate_service_name(value: str, what: str = "service name") -> str:
    """A NATS micro service name: ``[A-Za-z0-9_-]+``."""
    if not isinstance(value, str) or not _SERVICE_NAME_RE.fullmatch(value):
        raise InvalidNameError(f"{what} {_describe(value)} must match [A-Za-z0-9_-]+")
    return value


def sanitize_consumer_name(value: str) -> str:
    """Replace the characters a consumer name may not hold with ``_`` (as noesis-ship does)."""
    return _CONSUMER_ILLEGAL_RE.sub("_", value)


def validate_object_name(value: str, what: str = "object name") -> str:
    """An object-store object name: non-empty text without control characters.

    NATS puts the base64url form of the name in the subject, so dots, slashes, spaces and
    non-ASCII letters are all allowed; control characters are refused because they make the
    name unprintable in logs and tools.
    """
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} must be a non-empty string, got {_describe(value)}")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise InvalidNameError(f"{what} {_describe(value)} may not contain control characters or lone surrogates")
    return value
