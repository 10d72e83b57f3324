"""A service's contract as an AsyncAPI 3.0 document: :func:`asyncapi_document` (``shipkit docs gen``).

Pure: reads only the declarations (nothing connects). Every declaration becomes a channel (its
subject) and an operation on it, with the pydantic JSON schemas of what travels there:

- request/reply handlers: ``receive`` on ``{prefix}.{name}`` with a ``reply`` of the handler's
  return type or the error contract (``ErrorResponse`` + ``Nats-Service-Error`` headers);
- mutation events: ``send`` of a ``ShipEvent`` whose ``payload`` is the handler's reply;
- ``@on_event`` consumers, KV watches, core subscriptions, channels and job workers: ``receive``.

Schemas are hoisted into ``components.schemas`` (pydantic's ``$defs`` would not resolve inside
the document). Declarations this module does not know yet (agents, while that work lands) are
added by a :data:`Contributor` passed to :func:`asyncapi_document`: it receives the
:class:`AsyncApiBuilder` and calls :meth:`~AsyncApiBuilder.add_operation`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_type_hints

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import CoreSchema

from shipkit.errors import ConfigurationError
from shipkit.jobs._layout import QueueLayout
from shipkit.models import ChannelMessage, ErrorResponse, Event, ShipEvent
from shipkit.primitives.channels import ChannelService
from shipkit.service.app import Service
from shipkit.service.endpoint import ERROR_CODE_HEADER, ERROR_HEADER
from shipkit.service.specs import HandlerSpec

__all__ = ["ASYNCAPI_VERSION", "AsyncApiBuilder", "Contributor", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
_REF_TEMPLATE = "#/components/schemas/{model}"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_BINDING_VERSION = "0.1.0"

Contributor = Callable[["AsyncApiBuilder", Service], None]
"""``(builder, service) -> None``: adds operations for declarations this module does not cover."""


def _key(text: str) -> str:
    """A component / channel / operation key (AsyncAPI allows ``[A-Za-z0-9._-]``)."""
    return _KEY_UNSAFE.sub("_", text)


class AsyncApiBuilder:
    """Collects channels, messages, operations and schemas, then renders the document."""

    def __init__(self, service: Service, *, server_url: str | None = None) -> None:
        self.service = service
        self.server_url = server_url
        self.schemas: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self._pending: list[tuple[dict[str, Any], JsonSchemaMode, CoreSchema, Any]] = []

    # -- schemas and messages ----------------------------------------------------------------------

    def schema_of(self, type_: Any, *, mode: Literal["validation", "serialization"] = "validation") -> dict[str, Any]:
        """The JSON schema of ``type_``, filled in by :meth:`render`; models go to ``components.schemas``.

        All schemas are generated together at the end, so a model used by several messages is one
        component, and one whose input and output shapes differ gets pydantic's ``-Input``/``-Output`` pair.

        Raises:
            ConfigurationError: pydantic cannot describe ``type_`` (the message names it).
        """
        if type_ is bytes:
            return {"type": "string", "format": "binary", "description": "raw bytes"}
        if type_ is type(None):
            return {"type": "null", "description": "an empty body"}
        try:
            core_schema = TypeAdapter(type_).core_schema
        except Exception as exc:  # pydantic raises several types for types it cannot describe
            raise ConfigurationError(f"AsyncAPI: cannot build a JSON schema for {type_!r}: {exc}") from exc
        placeholder: dict[str, Any] = {}
        self._pending.append((placeholder, mode, core_schema, type_))
        return placeholder

    def _fill_schemas(self) -> None:
        generator = GenerateJsonSchema(ref_template=_REF_TEMPLATE)
        inputs = [(index, mode, core) for index, (_, mode, core, _) in enumerate(self._pending)]
        try:
            schemas, definitions = generator.generate_definitions(inputs)
        except Exception as exc:  # PydanticInvalidForJsonSchema and friends: name the types involved
            types = ", ".join(sorted({repr(type_) for *_, type_ in self._pending}))
            raise ConfigurationError(f"AsyncAPI: cannot build the JSON schemas of {types}: {exc}") from exc
        for index, (placeholder, mode, _, _) in enumerate(self._pending):
            placeholder.update(schemas[(index, mode)])
        # pydantic already keeps definition names to [A-Za-z0-9._-], what AsyncAPI component keys allow
        self.schemas.update({str(name): value for name, value in definitions.items()})
        self._pending.clear()

    def add_message(self, key: str, payload: Any, *, summary: str = "", headers: Any = None) -> dict[str, str]:
        """Register ``components.messages[key]``; returns a ``$ref`` to it."""
        key = _key(key)
        message: dict[str, Any] = {"name": key, "payload": payload}
        if payload.get("format") == "binary":  # placeholders are still empty here; binary is set at once
            message["contentType"] = "application/octet-stream"
        if summary:
            message["summary"] = summary
        if headers is not None:
            message["headers"] = headers
        self.messages[key] = message
        return {"$ref": f"#/components/messages/{key}"}

    # -- channels and operations ---------------------------------------------------------------

    def add_channel(self, key: str, address: str | None, messages: dict[str, Any], *, description: str = "") -> str:
        """Register (or extend) ``channels[key]``; returns the channel's key."""
        key = _key(key)
        channel = self.channels.setdefault(key, {"address": address, "messages": {}})
        channel["messages"].update({_key(name): ref for name, ref in messages.items()})
        if description:
            channel["description"] = description
        return key

    def add_operation(
        self,
        key: str,
        action: Literal["send", "receive"],
        channel: str,
        *,
        summary: str = "",
        queue: str | None = None,
        reply_channel: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Register ``operations[key]`` on ``channel`` (all its messages), with an optional reply channel."""
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": self._message_refs(channel),
        }
        if summary:
            operation["summary"] = summary
        if queue is not None:
            operation["bindings"] = {"nats": {"queue": queue, "bindingVersion": _BINDING_VERSION}}
        if reply_channel is not None:
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{reply_channel}"},
                "messages": self._message_refs(reply_channel),
            }
        operation.update(extra or {})
        self.operations[_key(key)] = operation

    def _message_refs(self, channel: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in self.channels[channel]["messages"]]

    def render(self) -> dict[str, Any]:
        """The AsyncAPI document."""
        self._fill_schemas()
        service = self.service
        info: dict[str, Any] = {"title": service.name, "version": service.version}
        if service.description:
            info["description"] = service.description
        document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
        if self.server_url:
            host = self.server_url.split("://", 1)[-1]
            document["servers"] = {"nats": {"host": host, "protocol": "nats"}}
        document["defaultContentType"] = "application/json"
        document["channels"] = self.channels
        document["operations"] = self.operations
        document["components"] = {"schemas": self.schemas, "messages": self.messages}
        return document


def asyncapi_document(
    service: Service, *, server_url: str | None = None, contributors: Sequence[Contributor] = ()
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``service`` (a JSON-able dict).

    Args:
        service: the declared service (nothing is connected).
        server_url: a NATS URL for the ``servers`` section (omitted when None).
        contributors: add operations for declarations this module does not know (agents).

    Raises:
        ConfigurationError: a payload or return type has no JSON schema (the message names it).
    """
    builder = AsyncApiBuilder(service, server_url=server_url)
    builder.add_message("error", builder.schema_of(ErrorResponse), summary="the error reply", headers=_ERROR_HEADERS)
    for handler in service.handlers:
        _add_handler(builder, handler)
    _add_events(builder)
    _add_subscriptions(builder)
    _add_job_workers(builder)
    for contribute in contributors:
        contribute(builder, service)
    return builder.render()


_ERROR_HEADERS = {
    "type": "object",
    "properties": {
        ERROR_HEADER: {"type": "string", "description": "the one-line error message"},
        ERROR_CODE_HEADER: {"type": "string", "description": "the HTTP-like status code (400, 404, 413, 500, 503)"},
    },
    "required": [ERROR_HEADER, ERROR_CODE_HEADER],
}


def _return_type(func: Callable[..., Any]) -> Any:
    try:
        return get_type_hints(func).get("return", Any)
    except Exception as exc:  # unresolvable forward references and friends
        raise ConfigurationError(f"AsyncAPI: cannot resolve the return type of {func.__qualname__}: {exc}") from exc


def _add_handler(builder: AsyncApiBuilder, handler: HandlerSpec) -> None:
    key = handler.name
    request_type = handler.signature.payload_type if handler.signature.payload_param else type(None)
    reply_type = _return_type(handler.func)
    request = builder.add_message(f"{key}.request", builder.schema_of(request_type), summary=f"request to {key}")
    reply = builder.add_message(
        f"{key}.reply", builder.schema_of(reply_type, mode="serialization"), summary=f"reply of {key}"
    )
    description = handler.description
    channel = builder.add_channel(f"request.{key}", handler.subject, {"request": request}, description=description)
    reply_channel = builder.add_channel(
        f"reply.{key}",
        None,
        {"reply": reply, "error": {"$ref": "#/components/messages/error"}},
        description="the requester's inbox (the request's NATS reply subject)",
    )
    builder.add_operation(
        f"handle.{key}",
        "receive",
        channel,
        summary=handler.description or f"answer {key}",
        queue=handler.queue,
        reply_channel=reply_channel,
    )
    _add_mutation(builder, handler, reply_type)


def _add_mutation(builder: AsyncApiBuilder, handler: HandlerSpec, reply_type: Any) -> None:
    service = builder.service
    mutation = handler.mutation if handler.mutation is not None else service.mutation_callback_func
    if mutation is None:
        return
    if isinstance(mutation, str):
        address: str = f"{service.event_prefix}.{mutation}"
        payload = builder.schema_of(reply_type, mode="serialization")
        summary = f"published after each successful {handler.name}"
    else:
        address = f"{service.event_prefix}.>"
        payload = {"description": "decided at run time by the mutation callback"}
        summary = f"published after a successful {handler.name} when the mutation callback returns an event"
    if service.mutation_transport == "jetstream":
        payload = _envelope(builder, payload)
    message = builder.add_message(f"{handler.name}.mutation", payload, summary=summary)
    event_key = mutation if isinstance(mutation, str) else f"callback.{handler.name}"
    channel = builder.add_channel(f"emit.{event_key}", address, {f"{handler.name}.mutation": message})
    builder.add_operation(f"emit.{handler.name}", "send", channel, summary=summary)


def _envelope(builder: AsyncApiBuilder, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``ShipEvent`` whose ``payload`` property is ``payload``."""
    envelope = builder.schema_of(ShipEvent)
    return {
        "allOf": [envelope, {"type": "object", "properties": {"payload": payload}}],
        "description": "a ShipEvent envelope",
    }


def _add_events(builder: AsyncApiBuilder) -> None:
    for spec in builder.service.events:
        name = spec.durable
        payload_type = spec.signature.payload_type
        if spec.wants_envelope:
            payload = builder.schema_of(ShipEvent)
        else:
            payload = _envelope(builder, builder.schema_of(payload_type))
        message = builder.add_message(f"{name}.event", payload, summary=f"events consumed by {name}")
        channel = builder.add_channel(f"consume.{name}", spec.filter_subject, {"event": message})
        builder.add_operation(
            f"consume.{name}",
            "receive",
            channel,
            summary=f"durable consumer {name} on stream {spec.stream.name}",
            extra={"x-shipkit-durable": name, "x-shipkit-stream": spec.stream.name},
        )


def _add_subscriptions(builder: AsyncApiBuilder) -> None:
    service = builder.service
    for index, watch in enumerate(service.kv_watches):
        name = f"kv.{watch.bucket.bucket}.{index}"
        value = {"description": "the entry's value (any JSON)"} if watch.wants_entry else None
        payload = value or builder.schema_of(watch.signature.payload_type)
        message = builder.add_message(f"{name}.entry", payload, summary=f"puts and deletes in {watch.bucket.bucket}")
        address = f"$KV.{watch.bucket.bucket}.{watch.key}"
        channel = builder.add_channel(name, address, {"entry": message})
        builder.add_operation(f"watch.{name}", "receive", channel, summary=f"KV watch on {watch.bucket.bucket}")
    for index, sub in enumerate(service.messages):
        name = f"message.{index}"
        payload = builder.schema_of(Event if sub.wants_envelope else sub.signature.payload_type)
        message = builder.add_message(f"{name}.message", payload, summary=f"core messages on {sub.subject}")
        channel = builder.add_channel(name, sub.subject, {"message": message})
        builder.add_operation(f"subscribe.{name}", "receive", channel, queue=sub.queue)
    for spec in service.channels:
        name = f"channel.{spec.channel}"
        message = builder.add_message(f"{name}.message", builder.schema_of(ChannelMessage))
        channel = builder.add_channel(name, ChannelService.subject_for(spec.channel), {"message": message})
        builder.add_operation(f"listen.{name}", "receive", channel, summary=f"messages on channel {spec.channel}")


def _add_job_workers(builder: AsyncApiBuilder) -> None:
    service = builder.service
    layout = QueueLayout.build(service.job_queue, "JOB", None)
    for spec in service.job_workers:
        name = f"job.{spec.worker}"
        message = builder.add_message(
            f"{name}.payload",
            builder.schema_of(spec.payload_type),
            summary="the job's payload (stored in the job record; the dispatch message names the job)",
        )
        channel = builder.add_channel(name, layout.dispatch_subject(spec.worker), {"payload": message})
        builder.add_operation(
            f"work.{spec.worker}",
            "receive",
            channel,
            summary=f"job worker {spec.worker} on queue {service.job_queue} ({spec.concurrency} at a time)",
            extra={"x-shipkit-queue": service.job_queue},
        )
