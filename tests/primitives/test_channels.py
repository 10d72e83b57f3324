"""ChannelService against a real JetStream server (contract §1 to §3)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from nats.js import api
from structlog.testing import capture_logs

from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import ConfigurationError, InvalidNameError, SerializationError, StreamNotFoundError
from shipkit.models import ChannelMessage
from shipkit.primitives.channels import ChannelService

MESSAGE_KEYS = ["sender", "content", "timestamp", "channel", "message_id"]


@pytest_asyncio.fixture
async def alice(shipkit_connection: ConnectionManager) -> AsyncIterator[ChannelService]:
    """Agent "alice" with the CHANNELS stream provisioned."""
    service = await ChannelService("alice", shipkit_connection).connect()
    try:
        yield service
    finally:
        await service.close()


@pytest_asyncio.fixture
async def bob(shipkit_connection: ConnectionManager, alice: ChannelService) -> AsyncIterator[ChannelService]:
    """Agent "bob" on the same server."""
    service = await ChannelService("bob", shipkit_connection).connect()
    try:
        yield service
    finally:
        await service.close()


def collector() -> tuple[asyncio.Queue[ChannelMessage], Any]:
    """A queue and an async handler that puts every message into it."""
    queue: asyncio.Queue[ChannelMessage] = asyncio.Queue()

    async def handler(message: ChannelMessage) -> None:
        await queue.put(message)

    return queue, handler


async def get(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), timeout=5)


async def stored(nc: Any, stream: str = "CHANNELS") -> list[Any]:
    """Every message stored in ``stream``, read with a raw client."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]


def seed_message(channel: str, sender: str, content: str, n: int, metadata: str | None = None) -> bytes:
    """ChannelMessage JSON the way noesis-ship's serde writes it (metadata skipped when None)."""
    tail = f',"metadata":{metadata}' if metadata is not None else ""
    return (
        f'{{"sender":"{sender}","content":"{content}","timestamp":1795000000.{n:06d},'
        f'"channel":"{channel}","message_id":"{channel}-1795000000{n:09d}"{tail}}}'
    ).encode()


# -- sending -----------------------------------------------------------------------------------------


async def test_send_message_stores_contract_json(alice: ChannelService, raw: Any) -> None:
    """send_message stores a ChannelMessage on ship.channel.{channel}; no metadata key when None."""
    sent = await alice.send_message("general", "hello")
    [msg] = await stored(raw)  # the ack was awaited, so it is stored now
    body = json.loads(msg.data)
    assert msg.subject == "ship.channel.general"
    assert list(body) == MESSAGE_KEYS
    assert (body["sender"], body["content"], body["channel"]) == ("alice", "hello", "general")
    assert isinstance(body["timestamp"], float) and body["timestamp"] == sent.timestamp
    assert re.fullmatch(r"general-\d{19}", body["message_id"]) and body["message_id"] == sent.message_id
    assert b": " not in msg.data


async def test_send_message_with_metadata(alice: ChannelService, raw: Any) -> None:
    """Metadata is written last, as given."""
    await alice.send_message("general", "with meta", {"priority": "high", "tags": [1]})
    [msg] = await stored(raw)
    body = json.loads(msg.data)
    assert list(body) == [*MESSAGE_KEYS, "metadata"]
    assert body["metadata"] == {"priority": "high", "tags": [1]}


@pytest.mark.parametrize("bad", ["", "a b", "dev.*", "dev.>", "a..b"])
async def test_invalid_channel_raises_before_sending(alice: ChannelService, raw: Any, bad: str) -> None:
    """Wildcards, spaces and empty channel names raise InvalidNameError; nothing is stored or created."""
    _, handler = collector()
    with pytest.raises(InvalidNameError):
        await alice.send_message(bad, "x")
    with pytest.raises(InvalidNameError):
        await alice.subscribe(bad, handler)
    with pytest.raises(InvalidNameError):
        await alice.get_channel_history(bad, 5)
    state = (await raw.jetstream().stream_info("CHANNELS")).state
    assert (state.messages, state.consumer_count) == (0, 0)


def test_empty_agent_name_is_refused(shipkit_connection: ConnectionManager) -> None:
    """An agent needs a name."""
    with pytest.raises(InvalidNameError):
        ChannelService("", shipkit_connection)


async def test_non_string_content_or_metadata_raise(alice: ChannelService, raw: Any) -> None:
    """Content must be a string and metadata JSON-able; nothing is stored otherwise."""
    with pytest.raises(SerializationError):
        await alice.send_message("general", 42)  # type: ignore[arg-type]
    with pytest.raises(SerializationError):
        await alice.send_message("general", "x", {"bad": object()})
    assert (await raw.jetstream().stream_info("CHANNELS")).state.messages == 0


async def test_send_without_stream_raises(shipkit_connection: ConnectionManager) -> None:
    """Without the CHANNELS stream, send_message raises StreamNotFoundError naming the subject."""
    with pytest.raises(StreamNotFoundError, match=r"ship\.channel\.general"):
        await ChannelService("x", shipkit_connection).send_message("general", "hi")


# -- subscribing -------------------------------------------------------------------------------------


async def test_own_messages_are_acked_not_delivered(alice: ChannelService, bob: ChannelService) -> None:
    """The handler gets other agents' messages only; its own are acked all the same."""
    queue, handler = collector()
    consumer = await alice.subscribe("general", handler)
    await alice.send_message("general", "mine")
    theirs = await bob.send_message("general", "theirs")
    assert await get(queue) == theirs
    await consumer.stop()
    info = await consumer.info()
    assert (info.num_pending, info.num_ack_pending, info.ack_floor.stream_seq) == (0, 0, 2)
    assert queue.empty()


async def test_durable_name_is_agent_and_channel_sanitized(
    shipkit_connection: ConnectionManager, raw: Any, alice: ChannelService
) -> None:
    """The durable is {agent}_{channel} with illegal characters replaced by '_' and filters the channel."""
    agent = ChannelService("my agent.v1", shipkit_connection)
    _, handler = collector()
    consumer = await agent.subscribe("dev.ops", handler)
    assert consumer.durable == "my_agent_v1_dev_ops" == agent.durable_for("dev.ops")
    info = await raw.jetstream().consumer_info("CHANNELS", "my_agent_v1_dev_ops")
    assert info.config.filter_subject == "ship.channel.dev.ops"
    await agent.close()


async def test_replay_history_delivers_earlier_messages(alice: ChannelService, bob: ChannelService) -> None:
    """With replay_history=True a new subscriber first receives the retained messages."""
    earlier = [await bob.send_message("general", f"m{i}") for i in range(3)]
    queue, handler = collector()
    await alice.subscribe("general", handler, replay_history=True)
    assert [await get(queue) for _ in range(3)] == earlier


async def test_without_replay_only_new_messages_arrive(alice: ChannelService, bob: ChannelService) -> None:
    """With replay_history=False a new subscriber starts at new messages."""
    await bob.send_message("general", "before")
    queue, handler = collector()
    await alice.subscribe("general", handler)
    after = await bob.send_message("general", "after")
    assert await get(queue) == after


async def test_resubscribe_resumes_where_it_left_off(alice: ChannelService, bob: ChannelService) -> None:
    """The same agent re-subscribing gets the messages it missed, none twice."""
    queue, handler = collector()
    consumer = await alice.subscribe("general", handler)
    first = await bob.send_message("general", "one")
    assert await get(queue) == first
    await consumer.stop()
    missed = [await bob.send_message("general", t) for t in ("two", "three")]
    queue2, handler2 = collector()
    consumer2 = await alice.subscribe("general", handler2)
    assert [await get(queue2) for _ in range(2)] == missed
    await consumer2.stop()
    info = await consumer2.info()
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)


async def test_handler_exception_naks_and_redelivers(alice: ChannelService, bob: ChannelService) -> None:
    """A handler that raises receives the message again after the nak delay."""
    attempts: list[ChannelMessage] = []
    done: asyncio.Queue[ChannelMessage] = asyncio.Queue()

    async def flaky(message: ChannelMessage) -> None:
        attempts.append(message)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        await done.put(message)

    await alice.subscribe("general", flaky, nak_delay_s=0.05)
    sent = await bob.send_message("general", "retry me")
    assert await get(done) == sent
    assert attempts == [sent, sent]


async def test_undecodable_message_is_acked_and_skipped(alice: ChannelService, raw: Any) -> None:
    """Garbage on a channel is logged and acked; the subscriber goes on with the next message."""
    queue, handler = collector()
    consumer = await alice.subscribe("general", handler)
    js = raw.jetstream()
    with capture_logs() as logs:
        await js.publish("ship.channel.general", b"not json at all")
        await js.publish("ship.channel.general", seed_message("general", "rust", "ok", 1))
        message = await get(queue)
    assert message.content == "ok"
    assert [e["subject"] for e in logs if e["event"] == "message.undecodable"] == ["ship.channel.general"]
    await consumer.stop()
    assert (await consumer.info()).ack_floor.stream_seq == 2


async def test_receives_seed_json_from_a_rust_agent(alice: ChannelService, raw: Any) -> None:
    """Messages written the noesis-ship way (with and without metadata) reach the handler intact."""
    queue, handler = collector()
    await alice.subscribe("general", handler)
    js = raw.jetstream()
    await js.publish("ship.channel.general", seed_message("general", "rusty", "hi", 1))
    await js.publish("ship.channel.general", seed_message("general", "rusty", "meta", 2, '{"k":[1,2]}'))
    first, second = await get(queue), await get(queue)
    assert (first.sender, first.content, first.channel, first.metadata) == ("rusty", "hi", "general", None)
    assert first.message_id == "general-1795000000000000001"
    assert first.timestamp == pytest.approx(1795000000.000001)
    assert second.metadata == {"k": [1, 2]}


# -- history -----------------------------------------------------------------------------------------


async def test_history_returns_most_recent_oldest_first(alice: ChannelService, bob: ChannelService) -> None:
    """get_channel_history returns the newest `limit` messages of that channel, oldest first."""
    general: list[str] = []
    for i in range(30):
        general.append((await alice.send_message("general", f"g{i}")).content)
        await bob.send_message("random", f"r{i}")
        if i % 3 == 0:
            general.append((await bob.send_message("general", f"b{i}")).content)
    history = await alice.get_channel_history("general", 7)
    assert [m.content for m in history] == general[-7:] == ["b24", "g25", "g26", "g27", "b27", "g28", "g29"]
    assert all(m.channel == "general" for m in history)


async def test_history_when_channel_is_sparse_in_a_busy_stream(alice: ChannelService, bob: ChannelService) -> None:
    """A channel whose messages are spread far apart still yields exactly its newest `limit`."""
    for i in range(5):
        await alice.send_message("rare", f"rare{i}")
        await bob.send_message("busy", "x")
        for _ in range(40):
            await bob.send_message("busy", "y")
    history = await alice.get_channel_history("rare", 3)
    assert [m.content for m in history] == ["rare2", "rare3", "rare4"]


async def test_history_limit_larger_than_channel(alice: ChannelService) -> None:
    """Asking for more than exists returns all of the channel's messages, oldest first."""
    for i in range(4):
        await alice.send_message("small", f"s{i}")
    assert [m.content for m in await alice.get_channel_history("small", 50)] == ["s0", "s1", "s2", "s3"]


async def test_history_of_empty_channel_and_zero_limit(alice: ChannelService) -> None:
    """An unused channel and limit=0 both give []; a negative limit is refused."""
    assert await alice.get_channel_history("nothing-here", 10) == []
    await alice.send_message("general", "x")
    assert await alice.get_channel_history("general", 0) == []
    with pytest.raises(ConfigurationError):
        await alice.get_channel_history("general", -1)


async def test_history_skips_undecodable_messages(alice: ChannelService, raw: Any) -> None:
    """Undecodable messages in the window are skipped with a log line."""
    await alice.send_message("general", "before")
    await raw.jetstream().publish("ship.channel.general", b"\x00garbage")
    await alice.send_message("general", "after")
    with capture_logs() as logs:
        history = await alice.get_channel_history("general", 3)
    assert [m.content for m in history] == ["before", "after"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["message.undecodable"]


async def test_history_decodes_seed_messages(alice: ChannelService, raw: Any) -> None:
    """History written by a Rust agent is read back as ChannelMessage objects."""
    js = raw.jetstream()
    for n in range(3):
        await js.publish("ship.channel.general", seed_message("general", "rusty", f"c{n}", n))
    history = await alice.get_channel_history("general", 2)
    assert [(m.sender, m.content) for m in history] == [("rusty", "c1"), ("rusty", "c2")]


async def test_custom_stream(shipkit_connection: ConnectionManager, raw: Any) -> None:
    """A custom stream config is provisioned and used for sending and history."""
    stream = StreamConfig.channels().with_memory_storage().model_copy(update={"name": "CHANNELS_MEM"})
    service = await ChannelService("carol", shipkit_connection, stream=stream).connect()
    await service.send_message("general", "in memory")
    assert [m.content for m in await service.get_channel_history("general", 5)] == ["in memory"]
    storage = (await raw.jetstream().stream_info("CHANNELS_MEM")).config.storage
    assert getattr(storage, "value", storage) == "memory"
    await service.close()
    assert shipkit_connection.is_connected  # a shared connection stays open


# -- the seed's call shapes ------------------------------------------------------------------------


async def test_seed_channel_service_new_then_connect_agent_name(shipkit_config: NatsConfig, raw: Any) -> None:
    """Mirrors the seed's `ChannelService::new(cfg)` then `ch.connect(agent_name)` and `ch.send_message(..)`."""
    channels = ChannelService(shipkit_config)
    await channels.connect("seed-agent")
    try:
        assert channels.agent_name == "seed-agent"
        await channels.send_message("general", "hello from the seed shape")
    finally:
        await channels.close()
    [msg] = await stored(raw)
    assert json.loads(msg.data)["sender"] == "seed-agent"


async def test_seed_channel_service_over_a_shared_manager(shipkit_connection: ConnectionManager) -> None:
    """ChannelService(manager) then connect(agent_name) works too, and close() keeps the shared manager open."""
    channels = ChannelService(shipkit_connection)
    await channels.connect("dave")
    await channels.close()
    assert shipkit_connection.is_connected


async def test_seed_shape_refuses_missing_or_conflicting_agent_names(
    shipkit_config: NatsConfig, shipkit_connection: ConnectionManager
) -> None:
    """connect() without any agent name, a second differing name, or two connections raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match="connect\\(agent_name\\)"):
        await ChannelService(shipkit_connection).connect()
    with pytest.raises(ConfigurationError, match="'alice'"):
        await ChannelService("alice", shipkit_connection).connect("bob")
    with pytest.raises(ConfigurationError, match="two connections"):
        ChannelService(shipkit_config, shipkit_connection)
    with pytest.raises(ConfigurationError, match="no agent name yet"):
        ChannelService(shipkit_connection).durable_for("general")
    with pytest.raises(InvalidNameError):
        await ChannelService(shipkit_connection).connect("  ")


async def test_seed_subscribe_signature(alice: ChannelService, bob: ChannelService) -> None:
    """Mirrors the seed's `ch.subscribe(channel, replay_history, handler)`: positional bool, then the handler."""
    await bob.send_message("general", "before")
    queue, handler = collector()
    consumer = await alice.subscribe("general", True, handler)
    assert (await get(queue)).content == "before"
    assert consumer.durable == "alice_general"
    info = await consumer.info()
    assert info.config.deliver_policy == api.DeliverPolicy.ALL


async def test_seed_subscribe_without_replay(alice: ChannelService, bob: ChannelService) -> None:
    """subscribe(channel, False, handler) delivers only messages sent after subscribing, as in the seed."""
    await bob.send_message("general", "old")
    queue, handler = collector()
    await alice.subscribe("general", False, handler)
    await bob.send_message("general", "new")
    assert (await get(queue)).content == "new"


async def test_subscribe_refuses_calls_fitting_neither_shape(alice: ChannelService) -> None:
    """A call that fits neither subscribe shape raises ConfigurationError naming both shapes."""
    _, handler = collector()
    bad_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((handler, True), {}),
        ((True,), {}),
        ((), {}),
        (("yes", handler), {}),
        ((True, handler), {"replay_history": True}),
        ((handler,), {"handler": handler}),
    ]
    for args, kwargs in bad_calls:
        with pytest.raises(ConfigurationError, match="replay_history, handler"):
            await alice.subscribe("general", *args, **kwargs)


async def test_subscribe_refuses_a_sync_handler(alice: ChannelService) -> None:
    """A plain function as the handler raises ConfigurationError in either shape."""

    def sync_handler(message: ChannelMessage) -> None:
        return None

    with pytest.raises(ConfigurationError, match="async"):
        await alice.subscribe("general", True, sync_handler)  # type: ignore[call-overload]
