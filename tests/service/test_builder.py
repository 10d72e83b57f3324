"""NatsServiceBuilder and ServiceArgs: the seed's request-reply behaviour byte for byte."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from structlog.testing import capture_logs

from shipkit import ConnectionManager, StreamConfig
from shipkit._names import validate_service_name
from shipkit.errors import ConfigurationError, InvalidNameError
from shipkit.service.builder import NatsServiceBuilder, ServiceArgs, service_name_for
from shipkit.service.importer import load_service
from shipkit.testing import run_service


async def list_items(payload: bytes) -> bytes:
    return b'{"items":[]}'


async def create(payload: bytes) -> bytes:
    return payload


async def fallback(subject: str, payload: bytes) -> bytes:
    return json.dumps({"subject": subject}).encode()


def test_dispatch_in_process_follows_seed_order() -> None:
    """dispatch: named handler, then default handler with the full subject, then UNKNOWN_COMMAND."""
    plain = NatsServiceBuilder("kanban").handler("list", list_items)
    with_default = NatsServiceBuilder("kanban").handler("list", list_items).default_handler(fallback)

    async def scenario() -> tuple[bytes, bytes, bytes]:
        return (
            await plain.dispatch("kanban.list", b""),
            await plain.dispatch("kanban.nope", b""),
            await with_default.dispatch("kanban.other", b""),
        )

    named, unknown, default = asyncio.run(scenario())
    assert named == b'{"items":[]}'
    assert unknown == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'
    assert json.loads(default) == {"subject": "kanban.other"}


async def test_running_builder_answers_bytes_unchanged(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """The reply body is the handler's bytes unchanged, and unknown commands get the seed's 404 body."""
    service = NatsServiceBuilder("kanban").handler("create", create).build()
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            echoed = await nc.request("kanban.create", b"  not json, kept as is  ", timeout=5)
            unknown = await nc.request("kanban.nope", b"", timeout=5)
    finally:
        await nc.close()
    assert echoed.data == b"  not json, kept as is  "
    assert unknown.data == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'


async def test_mutation_events_core_without_stream(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """Without an event stream, the mutation event's raw payload goes over core NATS to {prefix}.{type}."""
    service = (
        NatsServiceBuilder("kanban")
        .handler("create", create)
        .event_prefix("kanban.events")
        .mutation_callback(lambda command, response: (f"item.{command}d", json.loads(response)))
        .build()
    )
    nc = await nats.connect(shipkit_nats_url)
    try:
        sub = await nc.subscribe("kanban.events.>")
        async with run_service(service, shipkit_connection):
            await nc.request("kanban.create", b'{"id":1}', timeout=5)
            event = await sub.next_msg(timeout=5)
        streams = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    assert event.subject == "kanban.events.item.created"
    assert event.data == b'{"id":1}'
    assert streams == []


async def test_mutation_events_jetstream_with_stream(
    shipkit_connection: ConnectionManager, shipkit_nats_url: str
) -> None:
    """With event_bus_stream, the event is a ShipEvent stored in that stream (callback sees the reply bytes)."""
    seen: list[object] = []

    def to_event(command: str, response: bytes) -> tuple[str, object]:
        seen.append(response)
        return "item.created", json.loads(response)

    service = (
        NatsServiceBuilder("kanban")
        .handler("create", create)
        .event_prefix("kanban.events")
        .event_bus_stream(StreamConfig.new("KANBAN_EVENTS", "kanban.events.>"))
        .mutation_callback(to_event)
        .build()
    )
    nc = await nats.connect(shipkit_nats_url)
    try:
        async with run_service(service, shipkit_connection):
            await nc.request("kanban.create", b'{"id": 2}', timeout=5)
            msg = await nc.jetstream().get_msg("KANBAN_EVENTS", seq=1)
    finally:
        await nc.close()
    assert seen == [b'{"id": 2}']
    assert msg.subject == "kanban.events.item.created"
    event = json.loads(msg.data)
    assert list(event) == ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
    assert (event["event_type"], event["source"], event["payload"]) == ("item.created", "kanban", {"id": 2})


async def test_run_stops_on_sigterm_and_runs_shutdown_hooks(shipkit_nats_url: str) -> None:
    """run() answers requests, and SIGTERM stops it cleanly after running on_shutdown hooks."""
    stopped = asyncio.Event()

    async def on_stop() -> None:
        stopped.set()

    builder = NatsServiceBuilder("svc").nats_url(shipkit_nats_url).handler("list", list_items).on_shutdown(on_stop)
    previous = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(builder.run(graceful_timeout_s=2))
    nc = await nats.connect(shipkit_nats_url)
    try:
        for _ in range(200):  # wait (bounded) until the service subscribed
            try:
                reply = await nc.request("svc.list", b"", timeout=0.5)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.02)
        assert reply.data == b'{"items":[]}'
        signal.raise_signal(signal.SIGTERM)
        counts = await asyncio.wait_for(task, timeout=10)
    finally:
        await nc.close()
        signal.signal(signal.SIGTERM, previous)
    assert stopped.is_set()
    assert counts.handled >= 1
    assert signal.getsignal(signal.SIGTERM) == previous


def test_service_args_defaults_and_parsing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ServiceArgs: --data-dir defaults to '.', --nats-url to localhost:4222; both parse."""
    monkeypatch.delenv("SHIPKIT_NATS_URL", raising=False)
    monkeypatch.delenv("NATS_URL", raising=False)
    assert ServiceArgs.parse([]) == ServiceArgs(data_dir=Path("."), nats_url="nats://localhost:4222")
    data_dir = tmp_path / "data"  # its own path: a fixed one like /tmp/x may be a file on the machine
    parsed = ServiceArgs.parse(["--data-dir", str(data_dir), "--nats-url", "nats://h:1"])
    assert parsed == ServiceArgs(data_dir=data_dir, nats_url="nats://h:1")
    monkeypatch.setenv("NATS_URL", "nats://env:2")
    assert ServiceArgs.parse([]).nats_url == "nats://env:2"


# -- the seed's own call shapes: NatsServiceBuilder(prefix, state), a subject prefix ----------------------


class Board:
    """The kanban server's state: shared and mutated by every handler, as the seed's ``Arc<State>``."""

    def __init__(self) -> None:
        self.cards: list[dict[str, object]] = []
        self.saved = False


async def create_card(payload: bytes, state: Board) -> bytes:
    card = {"id": len(state.cards) + 1, **json.loads(payload)}
    state.cards.append(card)
    return json.dumps(card, separators=(",", ":")).encode()


async def count_cards(payload: bytes, state: Board) -> bytes:
    return f'{{"count":{len(state.cards)}}}'.encode()


async def ping(payload: bytes) -> bytes:
    return b'{"pong":true}'


def kanban_builder(board: Board) -> NatsServiceBuilder[Board]:
    return (
        NatsServiceBuilder("kanban.cmd", board)
        .handler("create", create_card)
        .handler("count", count_cards)
        .handler("ping", ping)
    )


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        ("kanban", "kanban"),
        ("kanban.cmd", "kanban-cmd"),
        ("ship.kanban.cmd", "ship-kanban-cmd"),
        ("a_b.c-d", "a_b-c-d"),
    ],
)
def test_service_name_for_derives_a_valid_micro_name(prefix: str, name: str) -> None:
    """A subject prefix maps to a NATS micro name: each character outside [A-Za-z0-9_-] becomes '-'."""
    assert service_name_for(prefix) == name
    assert validate_service_name(name) == name
    assert NatsServiceBuilder(prefix).build().name == name


async def test_dotted_prefix_serves_subjects_and_lists_derived_name(
    shipkit_connection: ConnectionManager, raw: Client
) -> None:
    """NatsServiceBuilder("kanban.cmd", state): a Rust agent's kanban.cmd.create gets the seed's reply bytes,
    and $SRV.INFO.kanban-cmd lists the service with its kanban.cmd.* endpoints."""
    board = Board()
    service = kanban_builder(board).build()
    async with run_service(service, shipkit_connection):
        created = await raw.request("kanban.cmd.create", b'{"title":"write tests"}', timeout=5)
        unknown = await raw.request("kanban.cmd.nope", b"", timeout=5)
        info = json.loads((await raw.request("$SRV.INFO.kanban-cmd", b"", timeout=5)).data)
        pong = json.loads((await raw.request("$SRV.PING.kanban-cmd", b"", timeout=5)).data)
    assert created.data == b'{"id":1,"title":"write tests"}'
    assert unknown.data == b'{"error":"UNKNOWN_COMMAND: nope","code":404}'
    assert (info["type"], info["name"], pong["name"]) == ("io.nats.micro.v1.info_response", "kanban-cmd", "kanban-cmd")
    assert [(e["name"], e["subject"]) for e in info["endpoints"]] == [
        ("create", "kanban.cmd.create"),
        ("count", "kanban.cmd.count"),
        ("ping", "kanban.cmd.ping"),
    ]


async def test_handlers_take_payload_or_payload_and_state(shipkit_connection: ConnectionManager, raw: Client) -> None:
    """Handlers taking (payload) and (payload, state) both answer; state is the very object passed, shared."""
    board = Board()
    builder = kanban_builder(board)
    async with run_service(builder.build(), shipkit_connection):
        await raw.request("kanban.cmd.create", b'{"title":"a"}', timeout=5)
        await raw.request("kanban.cmd.create", b'{"title":"b"}', timeout=5)
        counted = await raw.request("kanban.cmd.count", b"", timeout=5)
        pong = await raw.request("kanban.cmd.ping", b"", timeout=5)
    assert builder.state is board
    assert board.cards == [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}]
    assert counted.data == b'{"count":2}'
    assert pong.data == b'{"pong":true}'


async def test_default_handler_and_shutdown_hook_may_take_state(
    shipkit_connection: ConnectionManager, raw: Client
) -> None:
    """default_handler gets (subject, payload, state) and on_shutdown gets (state) when they ask for it."""
    board = Board()

    async def dispatch(subject: str, payload: bytes, state: Board) -> bytes:
        return json.dumps({"subject": subject, "cards": len(state.cards)}).encode()

    async def save(state: Board) -> None:
        state.saved = True

    builder = kanban_builder(board).default_handler(dispatch).on_shutdown(save)
    assert json.loads(await builder.dispatch("kanban.cmd.move", b"")) == {"subject": "kanban.cmd.move", "cards": 0}
    async with run_service(builder.build(), shipkit_connection):
        await raw.request("kanban.cmd.create", b'{"title":"a"}', timeout=5)
        moved = await raw.request("kanban.cmd.move", b"{}", timeout=5)
        assert not board.saved
    assert json.loads(moved.data) == {"subject": "kanban.cmd.move", "cards": 1}
    assert board.saved


async def test_dotted_prefix_publishes_mutation_events(shipkit_connection: ConnectionManager, raw: Client) -> None:
    """With prefix kanban.cmd, mutation events go to {event_prefix}.{type}; the default event prefix is
    kanban.events, outside the kanban.cmd.> subscription."""
    explicit = kanban_builder(Board()).event_prefix("board.events")
    default = kanban_builder(Board())
    for builder in (explicit, default):
        builder.mutation_callback(lambda command, response: ("card.created", json.loads(response)))
    sub = await raw.subscribe("*.events.>")
    for builder in (explicit, default):
        async with run_service(builder.build(), shipkit_connection):
            await raw.request("kanban.cmd.create", b'{"title":"a"}', timeout=5)
            event = await sub.next_msg(timeout=5)
        assert event.data == b'{"id":1,"title":"a"}'
        assert event.subject == ("board" if builder is explicit else "kanban") + ".events.card.created"


async def test_service_name_overrides_the_derived_name(shipkit_connection: ConnectionManager, raw: Client) -> None:
    """service_name() changes only the discovery name; requests still go to {prefix}.{command}."""
    service = kanban_builder(Board()).service_name("kanban").build()
    async with run_service(service, shipkit_connection):
        info = json.loads((await raw.request("$SRV.INFO.kanban", b"", timeout=5)).data)
        pong = await raw.request("kanban.cmd.ping", b"", timeout=5)
    assert info["name"] == "kanban"
    assert pong.data == b'{"pong":true}'
    with pytest.raises(InvalidNameError, match=r"'kanban\.cmd'"):
        NatsServiceBuilder("x").service_name("kanban.cmd")


@pytest.mark.parametrize("prefix", ["kanban.*", "kanban.>", "kanban..cmd", ".kanban", "kanban.", "kan ban", ""])
def test_invalid_prefix_is_refused_naming_it(prefix: str) -> None:
    """A prefix with wildcards, empty tokens or spaces is refused at construction, and the error names it."""
    with pytest.raises(InvalidNameError, match="service prefix") as caught:
        NatsServiceBuilder(prefix)
    assert repr(prefix) in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)


async def three(payload: bytes, state: object, extra: object) -> bytes:
    return payload


async def nothing() -> bytes:
    return b""


async def star_args(*args: object) -> bytes:
    return b""


def not_async(payload: bytes) -> bytes:
    return payload


async def needs_keyword(payload: bytes, *, flag: bool) -> bytes:
    return payload


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (
            lambda b: b.handler("x", three),
            r"handler .*three takes 3 positional parameters .*\(payload\) or \(payload, state\)",
        ),
        (lambda b: b.handler("x", nothing), r"handler .*nothing takes 0 positional parameters"),
        (lambda b: b.handler("x", star_args), r"handler .*star_args: \*args is not supported"),
        (lambda b: b.handler("x", not_async), r"handler .*not_async must be an `async def` function"),
        (lambda b: b.handler("x", needs_keyword), r"keyword-only parameter 'flag' needs a default"),
        (lambda b: b.handler("a.*", ping), r"command of .*ping 'a\.\*' may not contain wildcards"),
        (lambda b: b.handler("ping", ping).handler("ping", ping), r"command 'ping' has a handler already"),
        (
            lambda b: b.default_handler(ping),
            r"default handler .*ping .*\(subject, payload\) or \(subject, payload, state\)",
        ),
        (lambda b: b.default_handler(fallback).default_handler(fallback), r"has a default handler already"),
        (lambda b: b.on_shutdown(create_card), r"shutdown hook .*create_card takes 2 .*\(\) or \(state\)"),
        (lambda b: b.mutation_callback(lambda command: None), r"mutation callback .*takes 1 .*\(command, response\)"),
        (lambda b: b.mutation_callback(create_card), r"mutation callback .*create_card must be a plain function"),
    ],
)
def test_wrong_call_shapes_are_refused_at_registration(
    register: Callable[[NatsServiceBuilder[None]], object], message: str
) -> None:
    """A handler, default handler, shutdown hook or mutation callback of the wrong shape is a ConfigurationError
    naming the function and the shapes it may take."""
    with pytest.raises(ConfigurationError, match=message):
        register(NatsServiceBuilder("kanban.cmd"))


def test_builder_build_is_a_factory_for_shipkit_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shipkit run app:builder.build`` loads the builder's Service (the bound build() is the factory)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "builder_app.py").write_text(
        "from shipkit import NatsServiceBuilder\n\n\n"
        "async def ping(payload: bytes) -> bytes:\n    return payload\n\n\n"
        'builder = NatsServiceBuilder("kanban.cmd", {}).handler("ping", ping)\n'
    )
    try:
        service = load_service("builder_app:builder.build", app_dir=tmp_path)
    finally:
        sys.modules.pop("builder_app", None)
    assert (service.name, service.prefix, [h.subject for h in service.handlers]) == (
        "kanban-cmd",
        "kanban.cmd",
        ["kanban.cmd.ping"],
    )


def test_event_prefix_under_the_prefix_warns_with_a_default_handler() -> None:
    """build() warns when events on {event_prefix}.> would also reach the default handler via {prefix}.>."""
    with capture_logs() as logs:
        NatsServiceBuilder("kanban").default_handler(fallback).build()  # default event prefix kanban.events
        NatsServiceBuilder("kanban.cmd").default_handler(fallback).build()  # default kanban.events: outside
        NatsServiceBuilder("kanban").handler("list", list_items).build()  # no default handler: harmless
    assert [(e["event"], e["prefix"], e["event_prefix"]) for e in logs] == [
        ("builder.event_prefix_overlaps", "kanban", "kanban.events")
    ]
