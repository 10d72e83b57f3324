"""Tracing of the service layer: request handling, KV watch deliveries, and the hook for agents.

The runtime builds :class:`TracedEndpoint` instead of :class:`~shipkit.service.endpoint.Endpoint`
only when :func:`shipkit._tracing.tracer` returned a tracer at start; otherwise nothing here runs.
A traced request is one ``process {subject}`` span, child of the caller's context from the
request headers. It is made current before the handler starts, so what the handler does (its
mutation event, requests, job submits) are children; it ends in the endpoint's finished hook,
when the reply went out, which is also where a suspended handler's task ends it.

Agents (being built in parallel) trace a prompt with :func:`traced_call`: one ``process`` span
around the prompt's handling, parented on the headers of the message that carried it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from nats.aio.msg import Msg

from shipkit import _tracing
from shipkit.service.endpoint import Endpoint, FinishedHook
from shipkit.service.specs import KvWatchSpec

__all__ = ["TracedEndpoint", "end_request_span", "traced_call", "use_tracer_provider", "wrap_kv_watch"]

use_tracer_provider = _tracing.use_tracer_provider
"""Send shipkit's spans to a provider without replacing the process-wide one (see :mod:`shipkit._tracing`)."""

T = TypeVar("T")


class TracedEndpoint(Endpoint):
    """An endpoint whose every message runs in a ``process`` span (see the module docstring)."""

    __slots__ = ("tracer",)

    def __init__(self, *args: Any, tracer: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracer = tracer

    async def handle(self, msg: Msg) -> None:
        """Open the request's span, make it current, then handle the message as usual."""
        attributes = {"messaging.consumer.group.name": self.queue_group, "shipkit.endpoint": self.name}
        _span, token = _tracing.process(self.tracer, msg.subject, msg.headers, **attributes)
        try:
            await super().handle(msg)
        finally:
            _tracing.detach(token)  # a suspended handler's task keeps its own copy of the context


def end_request_span(endpoint: Endpoint, msg: Msg, elapsed_ns: int, code: int) -> None:
    """:data:`~shipkit.service.endpoint.FinishedHook`: end the request's span with its reply code."""
    _tracing.annotate(
        {"shipkit.reply.code": code or 200},
        error=endpoint.last_error if code else None,
    )
    _tracing.end_current_span()


def chain(*hooks: FinishedHook | None) -> FinishedHook | None:
    """One finished hook calling each of ``hooks`` in order (None when there is none)."""
    present = [hook for hook in hooks if hook is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def chained(endpoint: Endpoint, msg: Msg, elapsed_ns: int, code: int) -> None:
        for hook in present:
            hook(endpoint, msg, elapsed_ns, code)

    return chained


def wrap_kv_watch(tracer: Any, spec: KvWatchSpec) -> KvWatchSpec:
    """``spec`` whose function runs in a ``process $KV.{bucket}.{key}`` span per delivered entry."""
    func = spec.func
    destination = f"$KV.{spec.bucket.bucket}.{spec.key}"

    async def traced(*args: Any) -> Any:
        return await _tracing.run_in_span(
            tracer, destination, None, {"shipkit.kv.bucket": spec.bucket.bucket}, lambda: func(*args)
        )

    return replace(spec, func=traced)


async def traced_call(
    destination: str,
    headers: Mapping[str, str] | None,
    work: Callable[[], Awaitable[T]],
    **attributes: Any,
) -> T:
    """Run ``work()`` in a ``process {destination}`` span when tracing is on (the agents' hook).

    Call it where an agent handles a prompt: ``await traced_call(msg.subject, msg.headers,
    lambda: agent.answer(prompt), **{"shipkit.agent": name})``. Off, it only awaits ``work()``.
    """
    tracer = _tracing.tracer()
    if tracer is None:
        return await work()
    return await _tracing.run_in_span(tracer, destination, headers, attributes, work)
