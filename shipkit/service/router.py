"""Routing under a service's prefix, and the mutation events published after a successful request.

:class:`Router` is the ``{prefix}.>`` subscription: a named handler, else the default handler,
else the seed's 404 ``UNKNOWN_COMMAND``. :func:`mutation_hook` builds the after-success hook an
:class:`~shipkit.service.endpoint.Endpoint` runs before replying, so a request's event is
acknowledged by JetStream before its caller hears the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg

from shipkit._json import loads
from shipkit.errors import SerializationError
from shipkit.service.app import Service
from shipkit.service.codec import Signature, encode_result
from shipkit.service.context import CORRELATION_HEADER, Context
from shipkit.service.endpoint import Endpoint, error_reply
from shipkit.service.host import Host
from shipkit.service.specs import MutationCallback

__all__ = ["MutationHook", "Router", "mutation_hook"]

MutationHook = Callable[[Msg, Any, Any], Coroutine[Any, Any, None]]
"""``(msg, context, result) -> None``: run after a handler succeeded, before its reply."""

_RAW_BYTES = Signature("payload", bytes, None, lambda data: data, lambda value: value, False)


def mutation_hook(
    host: Host, service: Service, command: str | None, declared: str | MutationCallback | None
) -> MutationHook | None:
    """The after-success hook publishing a handler's mutation event (None when it has none).

    Args:
        host: the running service (publishing, the event bus).
        service: the declarations (prefix, event prefix, transport, the service-wide callback).
        command: the handler's command; None (the default handler) takes it from the subject.
        declared: the handler's own ``mutation`` (an event type or a callback), if any.
    """
    mutation = declared if declared is not None else service.mutation_callback_func
    if mutation is None:
        return None
    prefix_len = len(service.prefix) + 1
    core = service.mutation_transport == "core"
    event_prefix = service.event_prefix

    async def publish_mutation(msg: Msg, context: Context | None, result: Any) -> None:
        if isinstance(mutation, str):
            event_type, payload = mutation, _jsonable(result)
        else:
            produced = mutation(command or msg.subject[prefix_len:], result)
            if produced is None:
                return
            event_type, payload = produced
        if core:  # the seed without an event stream: raw payload, fire and forget
            body = payload if isinstance(payload, bytes) else encode_result(payload)
            await host.client.publish(f"{event_prefix}.{event_type}", body)
            return
        correlation = context.correlation_id if context is not None else None
        if correlation is None:
            correlation = (msg.headers or {}).get(CORRELATION_HEADER)
        await host.emit(event_type, payload, correlation_id=correlation)

    return publish_mutation


class Router:
    """The ``{prefix}.>`` subscription: named handler -> default handler -> 404 UNKNOWN_COMMAND.

    Args:
        host: the running service.
        service: the declarations (prefix, default handler, unknown-command policy).
        endpoints: the handlers sharing this subscription, by command.
        separate: commands answered by a subscription of their own (another queue group).
        new_endpoint: builds the default handler's endpoint (the runtime passes its
            instrumented factory when metrics or tracing are on).
    """

    __slots__ = ("default", "endpoints", "host", "prefix_len", "separate", "unknown_reply")

    def __init__(
        self,
        host: Host,
        service: Service,
        endpoints: dict[str, Endpoint],
        separate: set[str],
        new_endpoint: Callable[..., Endpoint] = Endpoint,
    ) -> None:
        self.host = host
        self.endpoints = endpoints
        self.separate = separate
        self.prefix_len = len(service.prefix) + 1
        self.unknown_reply = service.unknown_command_reply
        self.default: Endpoint | None = None
        spec = service.default_handler_spec
        if spec is not None:
            self.default = new_endpoint(
                host,
                "default",
                f"{service.prefix}.>",
                spec.func,
                _RAW_BYTES,
                max_concurrency=spec.max_concurrency,
                queue_group=service.queue_group,
                pass_subject=True,
                after_success=mutation_hook(host, service, None, None),
            )

    async def route(self, msg: Msg) -> None:
        """Dispatch one request under the prefix (the subscription callback)."""
        command = msg.subject[self.prefix_len :]
        endpoint = self.endpoints.get(command)
        if endpoint is not None:
            await endpoint.handle(msg)
        elif command in self.separate:
            return  # answered by its own subscription
        elif self.default is not None:
            await self.default.handle(msg)
        elif self.unknown_reply and msg.reply:
            body, headers = error_reply(404, f"UNKNOWN_COMMAND: {command}")
            await self.host.client.publish(msg.reply, body, headers=headers)


def _jsonable(result: Any) -> Any:
    """A handler's reply as a JSON value for an event payload (JSON bytes/str replies are parsed)."""
    if result is None:
        return None
    if isinstance(result, bytes | str):
        try:
            return loads(result)
        except SerializationError:
            return result.decode(errors="replace") if isinstance(result, bytes) else result
    return loads(encode_result(result))
