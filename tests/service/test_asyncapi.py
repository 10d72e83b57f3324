"""``asyncapi_document``: every declaration becomes a valid AsyncAPI 3.0 operation with its schemas."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from apps.docs_shop import service as shop
from pydantic import BaseModel, create_model

from shipkit import Service
from shipkit.errors import ConfigurationError
from shipkit.service.asyncapi import AsyncApiBuilder, asyncapi_document

SCHEMA_PATH = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0-without-id.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    """The official AsyncAPI 3.0.0 schema (vendored, see asyncapi/NOTICE.md)."""
    return jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    value: Any = document
    for part in ref.removeprefix("#/").split("/"):
        value = value[part]
    return value


def _assert_valid(document: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
    assert not errors, errors
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        _resolve(document, ref)  # a KeyError names the dangling reference


def test_document_validates_and_every_reference_resolves(validator: jsonschema.Draft7Validator) -> None:
    """The shop service's document passes the official 3.0.0 schema and has no dangling $ref."""
    document = asyncapi_document(shop, server_url="nats://nats.internal:4222")
    _assert_valid(document, validator)
    assert document["info"] == {"title": "shop", "version": "2.0.1", "description": "Orders and invoices."}
    assert document["servers"] == {"nats": {"host": "nats.internal:4222", "protocol": "nats"}}


def test_handler_is_a_receive_with_typed_request_reply_and_error() -> None:
    """A handler's operation carries the request model, the reply model and the error contract."""
    document = asyncapi_document(shop)
    operation = document["operations"]["handle.create"]
    assert operation["action"] == "receive"
    assert operation["bindings"]["nats"]["queue"] == "q"
    assert _resolve(document, operation["channel"]["$ref"])["address"] == "shop.orders.create"
    request = _resolve(document, _resolve(document, operation["messages"][0]["$ref"])["$ref"])
    assert request["payload"] == {"$ref": "#/components/schemas/NewOrder"}
    assert document["components"]["schemas"]["NewOrder"]["required"] == ["customer", "lines"]
    assert document["components"]["schemas"]["Line"]["properties"]["sku"]["type"] == "string"
    replies = [_resolve(document, _resolve(document, ref["$ref"])["$ref"]) for ref in operation["reply"]["messages"]]
    assert [r["payload"] for r in replies] == [
        {"$ref": "#/components/schemas/Order"},
        {"$ref": "#/components/schemas/ErrorResponse"},
    ]
    assert "Nats-Service-Error-Code" in replies[1]["headers"]["properties"]
    assert "bindings" not in document["operations"]["handle.ping"]  # queue=None: every instance answers


def test_mutation_events_consumers_watches_and_jobs_are_listed() -> None:
    """Mutation events are sends of a ShipEvent; consumers, watches, channels and job workers are receives."""
    document = asyncapi_document(shop)
    operations = document["operations"]
    emit = operations["emit.create"]
    assert emit["action"] == "send"
    assert _resolve(document, emit["channel"]["$ref"])["address"] == "ship.events.order.created"
    event = document["components"]["messages"]["create.mutation"]["payload"]
    assert event["allOf"][1]["properties"]["payload"] == {"$ref": "#/components/schemas/Order"}
    addresses = {key: _resolve(document, op["channel"]["$ref"])["address"] for key, op in operations.items()}
    assert addresses["consume.shop_payments"] == "ship.events.payment.*"
    assert addresses["consume.shop_audit"] == "ship.events.order.>"
    assert addresses["watch.kv.ship_config.0"] == "$KV.ship_config.shop.>"
    assert addresses["subscribe.message.0"] == "heartbeat"
    assert addresses["listen.channel.ops"] == "ship.channel.ops"
    assert addresses["work.invoicer"] == "ship.jobs.jobs.dispatch.invoicer"
    assert document["components"]["messages"]["job.invoicer.payload"]["payload"] == {
        "$ref": "#/components/schemas/Invoice"
    }
    assert {op["action"] for key, op in operations.items() if not key.startswith("emit.")} == {"receive"}


def test_callback_and_core_mutations_and_bytes(validator: jsonschema.Draft7Validator) -> None:
    """A mutation callback emits on the prefix's wildcard; core transport sends the raw reply; bytes are binary."""
    service = Service("raw", mutation_transport="core")

    @service.handler("put")
    async def put(data: bytes) -> bytes:
        return data

    service.mutation_callback(lambda command, response: ("thing.put", response))
    document = asyncapi_document(service)
    _assert_valid(document, validator)
    assert _resolve(document, document["operations"]["emit.put"]["channel"]["$ref"])["address"] == "ship.events.>"
    request = document["components"]["messages"]["put.request"]
    assert request["payload"]["format"] == "binary"
    assert request["contentType"] == "application/octet-stream"
    assert "allOf" not in document["components"]["messages"]["put.mutation"]["payload"]  # core: no envelope


def test_contributor_adds_operations(validator: jsonschema.Draft7Validator) -> None:
    """A contributor (the hook for agents) adds its own channel and operation to the document."""

    class Prompt(BaseModel):
        text: str

    def agents(builder: AsyncApiBuilder, service: Service) -> None:
        message = builder.add_message("agent.prompt", builder.schema_of(Prompt))
        channel = builder.add_channel("agent.helper", f"agents.{service.name}.helper.prompt", {"prompt": message})
        builder.add_operation("prompt.helper", "receive", channel, summary="prompt the helper agent")

    document = asyncapi_document(shop, contributors=[agents])
    _assert_valid(document, validator)
    assert document["operations"]["prompt.helper"]["summary"] == "prompt the helper agent"
    assert "Prompt" in document["components"]["schemas"]


def test_two_models_with_one_name_stay_apart(validator: jsonschema.Draft7Validator) -> None:
    """Two different models both named `Item` become two components, neither overwriting the other."""
    first = create_model("Item", a=(int, ...))
    second = create_model("Item", b=(str, ...))
    service = Service("clash")
    service.add_handler("one", _typed_handler(first))
    service.add_handler("two", _typed_handler(second))
    document = asyncapi_document(service)
    _assert_valid(document, validator)
    messages = document["components"]["messages"]
    shapes = [_resolve(document, messages[f"{name}.request"]["payload"]["$ref"]) for name in ("one", "two")]
    assert [sorted(shape["properties"]) for shape in shapes] == [["a"], ["b"]]


def test_undescribable_type_names_it() -> None:
    """A payload type pydantic cannot describe as JSON schema raises a ConfigurationError naming the type."""
    service = Service("odd")
    service.add_handler("call", _typed_handler(Callable[[int], int]))
    with pytest.raises(ConfigurationError, match="Callable"):
        asyncapi_document(service)


def _typed_handler(payload_type: Any) -> Any:
    async def handler(item: Any) -> None:
        return None

    handler.__annotations__ = {"item": payload_type, "return": None}
    return handler
