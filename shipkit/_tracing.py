"""OpenTelemetry tracing for every layer, optional and off by default (the ``otel`` extra).

The only module that imports ``opentelemetry``, and only when it is installed. Tracing is on when
a tracer provider is configured: the global one (``opentelemetry.trace.set_tracer_provider``) or
one given to :func:`use_tracer_provider`. Components ask :func:`tracer` **once**, when they are
built or started, and keep ``None`` when tracing is off, so the per-message cost of disabled
tracing is one ``is None`` check; nothing is imported or entered per message.

Context crosses processes as W3C ``traceparent`` / ``tracestate`` and ``baggage`` in NATS headers
(:func:`inject` / :func:`extract` work on plain dicts, so job records can carry them too). Span
names and attributes follow the OpenTelemetry messaging conventions (semconv 1.27+):
``"{operation} {destination}"``, ``messaging.system="nats"``, ``messaging.destination.name``,
``messaging.operation.type`` (``send`` / ``receive`` / ``process``), ``messaging.operation.name``,
``messaging.message.id``, ``messaging.consumer.group.name``; JetStream's stream sequence goes
to ``messaging.nats.stream.sequence`` (no convention names it yet).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]

__all__ = [
    "annotate",
    "consumer_attributes",
    "consumer_handler",
    "detach",
    "end_current_span",
    "extract",
    "inject",
    "job_context",
    "process",
    "record_failure",
    "run_in_span",
    "send",
    "tracer",
    "use_tracer_provider",
    "wrap_handler",
]

T = TypeVar("T")

SYSTEM = "nats"
_INSTRUMENTATION = "shipkit"
_override: Any = None


def use_tracer_provider(provider: Any) -> None:
    """Send shipkit's spans to ``provider`` (``None``: back to the global provider).

    For tests and programs that should not replace the process-wide provider. Components built
    or started afterwards pick it up; running ones keep what they decided at start.
    """
    global _override
    _override = provider


def tracer() -> Any:
    """The tracer for shipkit's spans, or ``None`` when tracing is off (ask once, at start)."""
    if trace is None:
        return None
    provider = _override if _override is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider):
        return None  # nothing configured: spans would go nowhere
    return provider.get_tracer(_INSTRUMENTATION)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (``traceparent``, ``tracestate``, ``baggage``) to ``headers``."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> Any:
    """The trace context carried by ``headers`` (an empty context when there is none)."""
    return propagate.extract(dict(headers or {}))


def _attributes(destination: str, operation: str, name: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "messaging.operation.name": name,
    }
    if extra:
        attributes.update({key: value for key, value in extra.items() if value is not None})
    return attributes


def record_failure(span: Any, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (``error.type`` and the exception event)."""
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))


async def send(
    tracer_: Any,
    destination: str,
    headers: Mapping[str, str] | None,
    deliver: Callable[[dict[str, str]], Awaitable[Any]],
    *,
    operation_name: str = "publish",
    kind: str = "producer",
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``deliver(headers)`` inside a ``send`` span, with the span's context in the headers.

    Returns what ``deliver`` returns; a JetStream ``PubAck``'s sequence is recorded on the span.
    """
    span_kind = SpanKind.CLIENT if kind == "client" else SpanKind.PRODUCER
    span = tracer_.start_span(
        f"{operation_name} {destination}",
        kind=span_kind,
        attributes=_attributes(destination, "send", operation_name, attributes),
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        result = await deliver(inject(dict(headers or {})))
    except BaseException as exc:
        record_failure(span, exc)
        raise
    else:
        # a PubAck from nats-py, or the parsed ack dict of shipkit._failover.publish_acked
        sequence = result.get("seq") if isinstance(result, dict) else getattr(result, "seq", None)
        if isinstance(sequence, int):
            span.set_attribute("messaging.nats.stream.sequence", sequence)
        return result
    finally:
        otel_context.detach(token)
        span.end()


def process(tracer_: Any, destination: str, headers: Mapping[str, str] | None, **attributes: Any) -> tuple[Any, Any]:
    """Start a ``process`` span for a received message and make it current: ``(span, token)``.

    The caller ends the span and passes ``token`` to :func:`detach` when the work is done.
    """
    span = tracer_.start_span(
        f"process {destination}",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=_attributes(destination, "process", "process", attributes),
    )
    return span, otel_context.attach(trace.set_span_in_context(span))


def detach(token: Any) -> None:
    """Restore the context that was current before :func:`process`."""
    otel_context.detach(token)


def consumer_attributes(msg: Any, durable: str) -> dict[str, Any]:
    """Attributes of a JetStream delivery: durable, stream sequence, delivery count, message id."""
    metadata = msg.metadata
    headers = msg.headers or {}
    return {
        "messaging.consumer.group.name": durable,
        "messaging.destination.subscription.name": durable,
        "messaging.nats.stream.sequence": metadata.sequence.stream,
        "messaging.nats.stream.name": metadata.stream,
        "messaging.message.delivery_count": metadata.num_delivered,
        "messaging.message.id": headers.get("Nats-Msg-Id"),
    }


async def run_in_span(
    tracer_: Any,
    destination: str,
    headers: Mapping[str, str] | None,
    attributes: Mapping[str, Any],
    work: Callable[[], Awaitable[T]],
) -> T:
    """``await work()`` inside a ``process`` span whose parent is the context ``headers`` carry."""
    span, token = process(tracer_, destination, headers, **attributes)
    try:
        return await work()
    except BaseException as exc:
        record_failure(span, exc)
        raise
    finally:
        detach(token)
        span.end()


def annotate(attributes: Mapping[str, Any], *, error: str | None = None) -> None:
    """Add ``attributes`` to the current span; ``error`` marks it failed with that description."""
    span = trace.get_current_span()
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[:300]))


def end_current_span() -> None:
    """End the span that is current (a request's, in its endpoint's finished hook)."""
    trace.get_current_span().end()


def wrap_handler(
    tracer_: Any,
    handler: Callable[[Any], Awaitable[None]],
    describe: Callable[[Any], tuple[str, Mapping[str, str] | None, dict[str, Any]]],
) -> Callable[[Any], Awaitable[None]]:
    """``handler`` run inside a ``process`` span; ``describe(item)`` gives (destination, headers, attributes)."""

    async def traced(item: Any) -> None:
        destination, headers, attributes = describe(item)
        await run_in_span(tracer_, destination, headers, attributes, lambda: handler(item))

    return traced


def consumer_handler(handler: Callable[[Any], Awaitable[None]], durable: str) -> Callable[[Any], Awaitable[None]]:
    """``handler`` run in a ``process`` span per JetStream delivery, or ``handler`` itself when off."""
    tracer_ = tracer()
    if tracer_ is None:
        return handler
    return wrap_handler(tracer_, handler, lambda msg: (msg.subject, msg.headers, consumer_attributes(msg, durable)))


def job_context() -> dict[str, str]:
    """The current trace context as a dict a job record can carry to its attempts."""
    return inject({})
