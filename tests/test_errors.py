"""Unit tests for shipkit.errors: the tree and translate_nats_errors (nats-py exceptions built by hand)."""

from __future__ import annotations

import asyncio
import builtins

import nats.errors as nats_errors
import nats.js.errors as js_errors
import pytest

import shipkit.errors as errors_module
from shipkit.errors import (
    BucketNotFoundError,
    ChecksumMismatchError,
    ClusterUnavailableError,
    ConfigurationError,
    InvalidNameError,
    JetStreamError,
    KeyNotFoundError,
    NatsConnectionError,
    NatsTimeoutError,
    NotConnectedError,
    ObjectNotFoundError,
    PayloadTooLargeError,
    ProvisioningError,
    RevisionConflictError,
    SerializationError,
    ServiceError,
    ShipkitError,
    StreamExistsError,
    StreamNotFoundError,
    translate_nats_errors,
)


def translate(exc: BaseException, what: str = "op target") -> BaseException:
    """Raise ``exc`` inside translate_nats_errors and return what comes out."""
    try:
        with translate_nats_errors(what):
            raise exc
    except BaseException as result:  # the caller inspects the type
        return result
    raise AssertionError("translate_nats_errors swallowed the exception")


# -- the tree -------------------------------------------------------------------------------------------


def test_every_public_error_is_rooted_at_shipkit_error() -> None:
    """Every exception class exported by shipkit.errors derives from ShipkitError."""
    exported = [getattr(errors_module, name) for name in errors_module.__all__]
    classes = [value for value in exported if isinstance(value, type)]
    assert len(classes) >= 23
    for cls in classes:
        assert issubclass(cls, ShipkitError), cls


def test_every_exception_class_of_shipkit_lives_in_errors() -> None:
    """No shipkit module but errors.py defines an exception class (the one drawn tree)."""
    import ast
    from pathlib import Path

    package = Path(errors_module.__file__).parent
    outside = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception")) for base in node.bases
            ):
                outside.append(f"{path.relative_to(package)}:{node.name}")
    assert outside == []


def test_the_drawn_tree_names_every_exported_error() -> None:
    """errors.py's docstring draws every exception class it exports."""
    doc = errors_module.__doc__ or ""
    for name in errors_module.__all__:
        if isinstance(getattr(errors_module, name), type):
            assert f"── {name} " in doc or f"    {name}\n" in doc, name


@pytest.mark.parametrize(
    ("child", "parents"),
    [
        (InvalidNameError, (ConfigurationError, ValueError)),
        (NotConnectedError, (NatsConnectionError,)),
        (NatsTimeoutError, (builtins.TimeoutError,)),
        (SerializationError, (ValueError,)),
        (PayloadTooLargeError, (ValueError,)),
        (StreamNotFoundError, (JetStreamError,)),
        (StreamExistsError, (JetStreamError,)),
        (BucketNotFoundError, (JetStreamError,)),
        (RevisionConflictError, (JetStreamError,)),
        (ProvisioningError, (JetStreamError,)),
        (KeyNotFoundError, (KeyError,)),
    ],
)
def test_tree_shape(child: type[BaseException], parents: tuple[type[BaseException], ...]) -> None:
    """Each error has the parents the errors module docstring draws, builtins included."""
    for parent in parents:
        assert issubclass(child, parent)


def test_errors_are_not_nats_errors() -> None:
    """No shipkit error derives from a nats-py exception, so users never need to import nats."""
    for name in errors_module.__all__:
        cls = getattr(errors_module, name)
        if isinstance(cls, type):
            assert not issubclass(cls, nats_errors.Error), name


def test_key_not_found_message_is_not_quoted() -> None:
    """KeyNotFoundError reads like other errors, not like KeyError's repr of its key."""
    assert str(KeyNotFoundError("being b1 is not registered")) == "being b1 is not registered"
    assert str(KeyNotFoundError()) == "key not found"
    with pytest.raises(KeyError):
        raise KeyNotFoundError("x")


def test_jetstream_error_keeps_codes() -> None:
    """JetStreamError carries err_code and status; both default to None."""
    error = StreamNotFoundError("gone", err_code=10059, status=404)
    assert (error.err_code, error.status) == (10059, 404)
    assert JetStreamError("x").err_code is None


def test_service_error_fields() -> None:
    """ServiceError keeps an int code, the message and details, and renders 'code: message'."""
    error = ServiceError(404, "UNKNOWN_COMMAND: nope", details={"known": ["a"]})
    assert (error.code, error.message, error.details) == (404, "UNKNOWN_COMMAND: nope", {"known": ["a"]})
    assert str(error) == "404: UNKNOWN_COMMAND: nope"
    assert ServiceError("429", "slow down").code == 429  # type: ignore[arg-type]


# -- translate_nats_errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (nats_errors.TimeoutError(), NatsTimeoutError),
        (nats_errors.FlushTimeoutError(), NatsTimeoutError),
        (js_errors.FetchTimeoutError(), NatsTimeoutError),
        (TimeoutError(), NatsTimeoutError),
        (nats_errors.NoRespondersError(), NatsTimeoutError),
        (nats_errors.ConnectionClosedError(), NatsConnectionError),
        (nats_errors.NoServersError(), NatsConnectionError),
        (nats_errors.StaleConnectionError(), NatsConnectionError),
        (nats_errors.UnexpectedEOF(), NatsConnectionError),
        (nats_errors.ConnectionReconnectingError(), NatsConnectionError),
        (nats_errors.ConnectionDrainingError(), NatsConnectionError),
        (nats_errors.AuthorizationError(), NatsConnectionError),
        (nats_errors.SecureConnFailedError(), NatsConnectionError),
        (nats_errors.OutboundBufferLimitError(), NatsConnectionError),
        (nats_errors.MaxPayloadError(), PayloadTooLargeError),
        (nats_errors.BadSubjectError(), InvalidNameError),
        (nats_errors.ProtocolError(), ShipkitError),
        (js_errors.KeyWrongLastSequenceError("wrong last sequence: 3"), RevisionConflictError),
        (js_errors.BucketNotFoundError(), BucketNotFoundError),
        (js_errors.NoStreamResponseError(), ClusterUnavailableError),
        (js_errors.KeyNotFoundError(), KeyNotFoundError),
        (js_errors.KeyDeletedError(), KeyNotFoundError),
        (js_errors.ObjectNotFoundError(), ObjectNotFoundError),
        (js_errors.ObjectDeletedError(), ObjectNotFoundError),
        (js_errors.DigestMismatchError(), ChecksumMismatchError),
        (js_errors.InvalidKeyError(), InvalidNameError),
        (js_errors.InvalidBucketNameError(), InvalidNameError),
        (js_errors.InvalidObjectNameError(), InvalidNameError),
        (js_errors.ServiceUnavailableError(code=503), JetStreamError),
        (js_errors.TooManyStalledMsgsError(), JetStreamError),
        (js_errors.Error("something"), JetStreamError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.__name__,
)
def test_translation_maps_to_the_right_class(raised: BaseException, expected: type[ShipkitError]) -> None:
    """Each nats-py exception becomes the matching shipkit error, prefixed with the target and chained."""
    result = translate(raised, "kv.put beings_status/b1")
    assert type(result) is expected
    assert str(result).startswith("kv.put beings_status/b1: ")
    assert result.__cause__ is raised


@pytest.mark.parametrize(
    ("raised", "expected", "err_code", "status"),
    [
        (
            js_errors.NotFoundError(code=404, err_code=10059, description="stream not found"),
            StreamNotFoundError,
            10059,
            404,
        ),
        (
            js_errors.BadRequestError(code=400, err_code=10039, description="no stream matches"),
            StreamNotFoundError,
            10039,
            400,
        ),
        (js_errors.BadRequestError(code=400, err_code=10058, description="name in use"), StreamExistsError, 10058, 400),
        (
            js_errors.BadRequestError(code=400, err_code=10071, description="wrong last seq"),
            RevisionConflictError,
            10071,
            400,
        ),
        (
            js_errors.NotFoundError(code=404, err_code=10014, description="consumer not found"),
            JetStreamError,
            10014,
            404,
        ),
        (js_errors.ServerError(code=500, err_code=10049, description="boom"), JetStreamError, 10049, 500),
    ],
)
def test_api_errors_keep_err_code_and_status(
    raised: js_errors.APIError, expected: type[JetStreamError], err_code: int, status: int
) -> None:
    """JetStream API errors are matched on err_code and keep err_code and status on the shipkit error."""
    result = translate(raised)
    assert type(result) is expected
    assert isinstance(result, JetStreamError)
    assert (result.err_code, result.status) == (err_code, status)
    assert raised.description is not None
    assert raised.description in str(result)
    assert result.__cause__ is raised


def test_api_errors_match_on_code_not_text() -> None:
    """An API error whose text says 'stream not found' but whose code is another stays a plain JetStreamError."""
    result = translate(js_errors.APIError(code=400, err_code=12345, description="stream not found"))
    assert type(result) is JetStreamError


def test_revision_conflict_from_kv_update_has_err_code() -> None:
    """nats-py's KeyWrongLastSequenceError (which drops the code) becomes a RevisionConflictError with 10071."""
    result = translate(js_errors.KeyWrongLastSequenceError("wrong last sequence: 7"))
    assert isinstance(result, RevisionConflictError)
    assert result.err_code == 10071
    assert "wrong last sequence: 7" in str(result)


def test_empty_what_has_no_prefix() -> None:
    """Without a target description the message starts with the error itself."""
    assert str(translate(nats_errors.TimeoutError(), "")) == "timed out"


@pytest.mark.parametrize(
    "raised",
    [ValueError("v"), KeyError("k"), OSError("o"), RuntimeError("r"), asyncio.CancelledError()],
    ids=lambda e: type(e).__name__,
)
def test_foreign_exceptions_pass_through(raised: BaseException) -> None:
    """Exceptions that are not nats-py's (cancellation included) leave the block untouched."""
    assert translate(raised) is raised


def test_shipkit_errors_pass_through_unchanged() -> None:
    """A shipkit error raised inside the block is re-raised as the same object, not wrapped."""
    original = KeyNotFoundError("b1")
    assert translate(original) is original


def test_no_exception_no_effect() -> None:
    """The block's result is unaffected when nothing is raised."""
    with translate_nats_errors("noop"):
        value = 1 + 1
    assert value == 2


def test_translate_nats_error_function_matches_the_context_manager() -> None:
    """as_shipkit_error returns the same translation, with the cause chained, and leaves others alone."""
    original = nats_errors.NoRespondersError()
    translated = errors_module.as_shipkit_error(original, "request x")
    assert type(translated) is type(translate(nats_errors.NoRespondersError(), "request x"))
    assert translated.__cause__ is original
    plain = ValueError("mine")
    assert errors_module.as_shipkit_error(plain) is plain
