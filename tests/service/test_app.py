"""Registration-time validation of Service declarations (pure logic, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from shipkit import ConfigurationError, Context, InvalidNameError, Service, ShipEvent
from shipkit.service.app import close_registrations
from shipkit.service.description import describe


class Item(BaseModel):
    title: str


def test_decorator_returns_the_function_unchanged() -> None:
    """A decorated handler is still the plain function, callable directly in tests."""
    service = Service("svc")

    async def create(item: Item) -> Item:
        return item

    assert service.handler("create")(create) is create
    assert service.handlers[0].subject == "svc.create"
    assert service.handlers[0].queue == "q"


def test_sync_function_is_refused_with_its_name() -> None:
    """A non-async handler fails at registration, naming the function."""
    service = Service("svc")

    def plain(item: Item) -> Item:
        return item

    with pytest.raises(ConfigurationError, match="plain must be an `async def`"):
        service.add_handler("plain", plain)  # type: ignore[arg-type]


def test_duplicate_handler_name_is_refused() -> None:
    """Two handlers for the same command are a configuration error."""
    service = Service("svc")

    async def one() -> None: ...

    service.add_handler("x", one)
    with pytest.raises(ConfigurationError, match="registered twice"):
        service.add_handler("x", one)


@pytest.mark.parametrize("name", ["a b", "a.*", ">", "", "a..b"])
def test_bad_handler_names_are_refused(name: str) -> None:
    """Wildcards, spaces and empty tokens are refused in handler names."""
    service = Service("svc")

    async def handler() -> None: ...

    with pytest.raises(InvalidNameError):
        service.add_handler(name, handler)


@pytest.mark.parametrize("name", ["has space", "dot.ted", "star*"])
def test_bad_service_names_are_refused(name: str) -> None:
    """Service names follow the NATS micro rule [A-Za-z0-9_-]+."""
    with pytest.raises(InvalidNameError):
        Service(name)


def test_version_must_be_semver() -> None:
    """A non-SemVer version is refused."""
    with pytest.raises(ConfigurationError, match="SemVer"):
        Service("svc", version="1.0")


def test_two_payload_parameters_are_refused() -> None:
    """A handler takes one payload and an optional context, nothing else."""
    service = Service("svc")

    async def handler(a: Item, b: Item) -> None: ...

    with pytest.raises(ConfigurationError, match="more than one payload"):
        service.add_handler("h", handler)


def test_context_parameter_is_recognised_by_annotation_or_name() -> None:
    """`ctx: Context` (any position) and an unannotated `ctx` are the context, not the payload."""
    service = Service("svc")

    async def first(ctx: Context, item: Item) -> None: ...

    async def second(item: Item, ctx: Any) -> None: ...

    a = service.add_handler("a", first).signature
    b = service.add_handler("b", second).signature
    assert (a.payload_param, a.context_param, a.context_first) == ("item", "ctx", True)
    assert (b.payload_param, b.context_param, b.context_first) == ("item", "ctx", False)
    assert a.call_args("P", "C") == ("C", "P")
    assert b.call_args("P", "C") == ("P", "C")


def test_registration_after_start_is_refused() -> None:
    """A running service (registrations closed by its runtime) refuses new handlers, saying why."""
    service = Service("svc")
    close_registrations(service)

    async def handler() -> None: ...

    with pytest.raises(ConfigurationError, match="already running"):
        service.add_handler("late", handler)


def test_on_event_defaults_durable_and_envelope() -> None:
    """on_event derives the durable from service and function, and detects the ShipEvent envelope."""
    service = Service("svc")

    @service.on_event("item.*")
    async def audit(event: ShipEvent) -> None: ...

    @service.on_event("item.created", durable="typed")
    async def typed(item: Item) -> None: ...

    assert service.events[0].durable == "svc_audit"
    assert service.events[0].filter_subject == "ship.events.item.*"
    assert service.events[0].wants_envelope is True
    assert service.events[1].wants_envelope is False
    assert service.events[0].stream.name == "SHIP_EVENTS"


def test_duplicate_durable_is_refused() -> None:
    """Two event handlers may not share a durable consumer."""
    service = Service("svc")

    async def a(event: ShipEvent) -> None: ...

    service.add_event_handler("x", a, durable="d")
    with pytest.raises(ConfigurationError, match="used twice"):
        service.add_event_handler("y", a, durable="d")


def test_custom_event_prefix_gets_its_own_stream() -> None:
    """A service with its own event prefix declares a stream capturing exactly that prefix."""
    service = Service("svc", event_prefix="acme.events")
    assert service.event_stream.name == "ACME_EVENTS"
    assert service.event_stream.subjects == ["acme.events.>"]


def test_describe_lists_subjects_streams_and_buckets() -> None:
    """describe() reports what the service will use (shipkit inspect)."""
    service = Service("kanban")

    @service.handler("create", mutation="item.created")
    async def create(item: Item) -> Item:
        return item

    @service.kv_watch("ship_config")
    async def on_config(value: Any) -> None: ...

    described = describe(service)
    assert described["handlers"][0] == {
        "name": "create",
        "subject": "kanban.create",
        "queue": "q",
        "mutation": "item.created",
    }
    assert described["streams"] == ["SHIP_EVENTS"]
    assert described["buckets"] == ["ship_config"]
    assert described["replicas"] == {"SHIP_EVENTS": 1, "ship_config": 1}


def test_describe_shows_the_replicas_setting_per_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Service(replicas=3) every resource shows R3, job streams and buckets included."""
    monkeypatch.delenv("SHIPKIT_REPLICAS", raising=False)
    service = Service("fleet", replicas=3)

    @service.on_event("item.*")
    async def on_item(event: Any) -> None: ...

    @service.job_worker("resize")
    async def resize(job: Any) -> None: ...

    replicas = describe(service)["replicas"]
    assert set(replicas.values()) == {3}
    assert {"SHIP_EVENTS", "JOBS_jobs", "JOBS_jobs_DISPATCH", "JOBS_jobs_COUNTERS", "JOBS_jobs_RESULTS"} <= set(
        replicas
    )


@pytest.mark.parametrize("replicas", [0, 6, "3", True])
def test_service_replicas_out_of_range_is_refused(replicas: Any) -> None:
    """Service(replicas=) outside 1-5 (or not an int) is a ConfigurationError naming the service."""
    with pytest.raises(ConfigurationError, match="'fleet': replicas must be"):
        Service("fleet", replicas=replicas)


async def _noop(payload: Any) -> None:
    """A handler for registration tests."""


@pytest.mark.parametrize(
    ("register", "fragment"),
    [
        (lambda s: s.handler("")(_noop), "handler name"),
        (lambda s: s.handler("a\x00b")(_noop), "control characters"),
        (lambda s: s.on_event("x.\x00")(_noop), "control characters"),
        (lambda s: s.job_worker("w\x00")(_noop), "w\\x00"),
        (lambda s: s.kv_watch("bad bucket")(_noop), "bad bucket"),
        (lambda s: s.on_channel("ch\x01")(_noop), "control characters"),
        (lambda s: s.on_message("m.\x7f")(_noop), "control characters"),
    ],
)
def test_bad_names_are_configuration_errors_naming_the_function(register: Any, fragment: str) -> None:
    """Empty names and NUL/control characters are refused with a ConfigurationError naming the function."""
    service = Service("names")
    with pytest.raises(ConfigurationError) as info:
        register(service)
    assert "_noop" in str(info.value)
    assert fragment in str(info.value)
    assert not service.handlers and not service.events and not service.kv_watches and not service.job_workers


def test_prefix_with_nul_is_refused() -> None:
    """A service prefix holding a NUL byte is an InvalidNameError."""
    with pytest.raises(InvalidNameError, match="control characters"):
        Service("names", prefix="p\x00")
