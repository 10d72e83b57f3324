"""Unit tests for the name validators in shipkit._names (no server needed)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipkit._names import (
    sanitize_consumer_name,
    validate_bucket_name,
    validate_consumer_name,
    validate_kv_key,
    validate_kv_key_pattern,
    validate_object_name,
    validate_service_name,
    validate_stream_name,
    validate_subject,
    validate_token,
)
from shipkit.errors import ConfigurationError, InvalidNameError

WHITESPACE = [" ", "\t", "\r", "\n", "\x0b", "\x0c", "\u00a0", "\u2003"]
BUCKET_CHARS = "abcXYZ019_-"
KV_CHARS = "abcXYZ019_-/=."

# A token made of characters that are fine anywhere in a subject (non-ASCII letters included).
safe_tokens = st.text(
    alphabet=st.characters(blacklist_characters=".*>", blacklist_categories=("Zs", "Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
).filter(lambda t: not any(c.isspace() for c in t))


def rejects(func: Callable[..., Any], *args: Any, **kwargs: Any) -> InvalidNameError:
    """Call ``func`` and return the InvalidNameError it must raise."""
    with pytest.raises(InvalidNameError) as info:
        func(*args, **kwargs)
    return info.value


# -- validate_token -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["heartbeat", "item-created", "agent_1", "Ärger", "a/b", "x=y", "$SYS"])
def test_token_accepts_and_returns_plain_tokens(value: str) -> None:
    """A token without dots, wildcards or whitespace is returned unchanged."""
    assert validate_token(value, "event type") == value


@pytest.mark.parametrize("value", ["", "a.b", "a*", "*", ">", "a>", *[f"a{w}b" for w in WHITESPACE]])
def test_token_rejects_separators_wildcards_and_whitespace(value: str) -> None:
    """A token with a dot, a wildcard or any whitespace (Unicode included), or an empty one, is refused."""
    rejects(validate_token, value, "event type")


def test_token_error_names_what_and_value() -> None:
    """The error message says which name it is, its value and the offending character."""
    message = str(rejects(validate_token, "deploy.started", "channel name"))
    assert "channel name" in message
    assert "'deploy.started'" in message
    assert "'.'" in message


def test_token_rejects_non_strings() -> None:
    """A non-string (None, bytes, int) is refused with InvalidNameError, not a TypeError."""
    for value in (None, b"abc", 3):
        rejects(validate_token, value, "token")


@given(safe_tokens)
def test_token_accepts_every_safe_token(token: str) -> None:
    """Any non-empty text without '.', '*', '>', whitespace or control characters is a valid token."""
    assert validate_token(token, "t") == token


@given(st.text(max_size=12))
def test_token_agrees_with_subject(value: str) -> None:
    """Whatever validate_token accepts is also a one-token subject, wildcards or not."""
    try:
        validate_token(value, "t")
    except InvalidNameError:
        return
    assert validate_subject(value, "s") == value


# -- validate_subject ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["heartbeat", "ship.events.item.created", "agent-1.heartbeat", "$KV.b.k"])
def test_subject_accepts_plain_subjects(value: str) -> None:
    """Dotted subjects of non-empty tokens are accepted without wildcards."""
    assert validate_subject(value, "subject") == value


@pytest.mark.parametrize("value", ["*", ">", "ship.events.>", "a.*.c", "*.*", "a.*.>"])
def test_subject_wildcards_only_when_allowed(value: str) -> None:
    """'*' tokens and a final '>' pass with wildcards=True and are refused otherwise."""
    assert validate_subject(value, "pattern", wildcards=True) == value
    assert "wildcards" in str(rejects(validate_subject, value, "subject"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "non-empty"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a..b", "empty token"),
        ("a b", "whitespace"),
        ("a.\tb", "whitespace"),
        ("a.>.b", "last token"),
        ("a.b*", "stand alone"),
        ("a.>b", "stand alone"),
        ("a*.b", "stand alone"),
    ],
)
def test_subject_rejects_malformed_patterns(value: str, reason: str) -> None:
    """Empty tokens, whitespace, '>' before the end and partial-token wildcards are refused, saying why."""
    assert reason in str(rejects(validate_subject, value, "pattern", wildcards=True))


@given(st.lists(safe_tokens, min_size=1, max_size=5))
def test_subject_accepts_joined_tokens(tokens: list[str]) -> None:
    """Valid tokens joined with dots always form a valid subject."""
    subject = ".".join(tokens)
    assert validate_subject(subject, "s") == subject


@given(st.text(alphabet="ab.*> \t", max_size=10))
def test_subject_without_wildcards_is_stricter(value: str) -> None:
    """Anything accepted without wildcards is accepted with them, and contains no wildcard token."""
    try:
        validate_subject(value, "s")
    except InvalidNameError:
        return
    assert validate_subject(value, "s", wildcards=True) == value
    assert "*" not in value.split(".")
    assert ">" not in value.split(".")


# -- stream and consumer names ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["SHIP_EVENTS", "CHANNELS", "KV_beings_status", "my-agent_general", "événements"])
def test_stream_name_accepts(value: str) -> None:
    """Stream names without separators, wildcards, slashes or whitespace are accepted."""
    assert validate_stream_name(value) == value


@pytest.mark.parametrize("value", ["", "A.B", "A*", "A>", "a/b", "a\\b", *[f"a{w}b" for w in WHITESPACE]])
def test_stream_name_rejects(value: str) -> None:
    """Stream names with '.', '*', '>', '/', '\\' or whitespace, or empty ones, are refused."""
    message = str(rejects(validate_stream_name, value))
    assert "stream name" in message


def test_consumer_name_uses_the_stream_rules() -> None:
    """Consumer names follow the stream-name rules and the error says 'consumer' when told so."""
    assert validate_consumer_name("agent_general") == "agent_general"
    assert "durable" in str(rejects(validate_consumer_name, "agent.general", "durable"))


# -- buckets, service names -------------------------------------------------------------------------


@pytest.mark.parametrize("func", [validate_bucket_name, validate_service_name])
@pytest.mark.parametrize("value", ["beings_status", "ship-config", "A1"])
def test_bucket_and_service_names_accept(func: Callable[[str], str], value: str) -> None:
    """Letters, digits, '_' and '-' are accepted for buckets and service names."""
    assert func(value) == value


@pytest.mark.parametrize("func", [validate_bucket_name, validate_service_name])
@pytest.mark.parametrize("value", ["", "a.b", "a b", "a/b", "a*", "ä", "name\n", "\nname"])
def test_bucket_and_service_names_reject(func: Callable[[str], str], value: str) -> None:
    """Anything outside [A-Za-z0-9_-], a trailing newline included, is refused."""
    rejects(func, value)


@given(st.text(max_size=10))
def test_bucket_name_is_exactly_the_pattern(value: str) -> None:
    """validate_bucket_name accepts a string if and only if it wholly matches [A-Za-z0-9_-]+."""
    matches = re.fullmatch(r"[A-Za-z0-9_-]+", value) is not None
    try:
        validate_bucket_name(value)
    except InvalidNameError:
        assert not matches
    else:
        assert matches


# -- KV keys and patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["being-1", "config/log_level", "a=b", "a.b.c", "_x", "-"])
def test_kv_key_accepts(value: str) -> None:
    """KV keys made of [-/_=.A-Za-z0-9] (dots inside) are accepted."""
    assert validate_kv_key(value) == value


@pytest.mark.parametrize("value", ["", ".a", "a.", "a..b", "a b", "a*", "a>", "ä", "key\n", "a:b"])
def test_kv_key_rejects(value: str) -> None:
    """KV keys with other characters, a leading/trailing dot, '..' or a trailing newline are refused."""
    rejects(validate_kv_key, value)


@given(st.text(alphabet=KV_CHARS + " *>\n", max_size=10))
def test_accepted_kv_keys_are_valid_subjects(key: str) -> None:
    """Every accepted KV key makes a valid wildcard-free subject `$KV.{bucket}.{key}`."""
    try:
        validate_kv_key(key)
    except InvalidNameError:
        return
    validate_subject(f"$KV.bucket.{key}", "kv subject")


@pytest.mark.parametrize("value", ["being-1", "config.*", "config.>", ">", "*", "a.*.c"])
def test_kv_key_pattern_accepts(value: str) -> None:
    """A KV watch pattern may be a key or use '*' tokens and a final '>'."""
    assert validate_kv_key_pattern(value) == value


@pytest.mark.parametrize("value", ["", "a.>.b", "a*", "a..b", "a b", "ä.*", ".>"])
def test_kv_key_pattern_rejects(value: str) -> None:
    """Malformed wildcards, empty tokens and non-key characters are refused in KV patterns."""
    rejects(validate_kv_key_pattern, value)


# -- object names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["b1_20250314_092653", "logs/run 1.txt", "résumé.pdf", "a.b.c"])
def test_object_name_accepts_printable_text(value: str) -> None:
    """Object names may hold dots, slashes, spaces and non-ASCII letters."""
    assert validate_object_name(value) == value


@pytest.mark.parametrize("value", ["", "a\nb", "a\x00b", "\ud800"])
def test_object_name_rejects_empty_and_control_characters(value: str) -> None:
    """Empty object names and ones with control characters or lone surrogates are refused."""
    rejects(validate_object_name, value)


# -- sanitize_consumer_name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("my-agent_general", "my-agent_general"),
        ("agent_dev.ops", "agent_dev_ops"),
        ("a b*c>d/e\\f", "a_b_c_d_e_f"),
        ("agent_team\tchat", "agent_team_chat"),
    ],
)
def test_sanitize_consumer_name_replaces_illegal_characters(value: str, expected: str) -> None:
    """Dots, wildcards, whitespace and slashes become '_' as noesis-ship does; the rest is kept."""
    assert sanitize_consumer_name(value) == expected


@given(st.text(min_size=1, max_size=20))
def test_sanitized_names_are_valid_consumer_names(value: str) -> None:
    """Any non-empty text, once sanitized, is a valid consumer name of the same length, and sanitizing is idempotent."""
    clean = sanitize_consumer_name(value)
    assert validate_consumer_name(clean) == clean
    assert len(clean) == len(value)
    assert sanitize_consumer_name(clean) == clean


def test_invalid_name_error_is_a_configuration_and_value_error() -> None:
    """InvalidNameError can be caught as ConfigurationError or as ValueError."""
    error = rejects(validate_bucket_name, "a.b")
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("value", ["a\x00b", "x\x01", "\x7f", "tab\u0085"])
@pytest.mark.parametrize(
    "check",
    [
        lambda v: validate_token(v, "token"),
        lambda v: validate_subject(f"ok.{v}", "subject"),
        lambda v: validate_stream_name(v),
    ],
)
def test_control_characters_are_refused(check: Any, value: str) -> None:
    """NUL and other control characters are refused in tokens, subjects and stream/consumer names."""
    with pytest.raises(InvalidNameError):
        check(value)
