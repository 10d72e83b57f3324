"""Named message channels with history on JetStream: :class:`ChannelService`.

Wire contract §1 to §3. A :class:`~shipkit.models.ChannelMessage` goes to
``ship.channel.{channel}`` on the ``CHANNELS`` stream (30 days, 10 000 messages) and the publish
waits for the JetStream ack. Each agent reads a channel through its own durable consumer
``{agent}_{channel}`` (illegal characters replaced by ``_``), so it resumes where it left off
after a restart; its own messages are acked and never handed to its handler::

    async with ChannelService("planner", "nats://localhost:4222") as channels:
        async def on_message(message: ChannelMessage) -> None:
            print(f"{message.sender}: {message.content}")

        await channels.subscribe("general", on_message, replay_history=True)
        await channels.send_message("general", "hello")
        recent = await channels.get_channel_history("general", limit=20)  # newest 20, oldest first

:meth:`ChannelService.get_channel_history` returns the **most recent** ``limit`` messages, oldest
first (noesis-ship returns the oldest ones by mistake). It locates the first of them by counting
(consumer ``num_pending`` from a start sequence, a galloping then binary search over sequence
numbers) and then reads exactly those messages, so it never scans the channel's older history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Self, overload

from nats.js import api
from nats.nuid import NUID
from pydantic import ValidationError

from shipkit._failover import publish_acked
from shipkit._jetstream import pull_next_subject
from shipkit._json import dumps
from shipkit._names import sanitize_consumer_name, validate_consumer_name, validate_subject
from shipkit.config import NatsConfig, StreamConfig
from shipkit.connection import ConnectionManager, ConnectionOwner
from shipkit.errors import ConfigurationError, InvalidNameError, SerializationError, translate_nats_errors
from shipkit.logging import get_logger
from shipkit.models import ChannelMessage
from shipkit.primitives.consumer import DurableConsumer, check_async

__all__ = ["CHANNEL_SUBJECT_PREFIX", "ChannelHandler", "ChannelService"]

log = get_logger(__name__)

CHANNEL_SUBJECT_PREFIX = "ship.channel"
"""Channel messages go to ``ship.channel.{channel}``."""

ChannelHandler = Callable[[ChannelMessage], Awaitable[None]]
"""An async handler of one channel message."""

_nuid = NUID()


class ChannelService(ConnectionOwner):
    """Send to, subscribe to and read the history of channels as one agent.

    Name the agent up front, or as noesis-ship does, when connecting::

        channels = await ChannelService("planner", conn).connect()
        channels = ChannelService(nats_config)          # the seed's shape:
        await channels.connect("planner")               # ChannelService::new(cfg), connect(agent)

    Args:
        agent_name: this agent: the ``sender`` of its messages and the first half of its
            durable names. A :class:`NatsConfig` or :class:`ConnectionManager` here (the seed's
            ``ChannelService::new(cfg)``) is the connection, and the name comes with
            :meth:`connect`.
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
        stream: the stream to provision; defaults to ``CHANNELS`` on ``ship.channel.>``.

    Raises:
        InvalidNameError: the agent name is empty.
        ConfigurationError: a connection is given twice (first argument and ``connection``).
    """

    def __init__(
        self,
        agent_name: str | NatsConfig | ConnectionManager | None = None,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        stream: StreamConfig | None = None,
    ) -> None:
        if isinstance(agent_name, NatsConfig | ConnectionManager):
            if connection is not None:
                raise ConfigurationError(
                    "ChannelService got two connections: use ChannelService(cfg) then connect(agent_name), "
                    "or ChannelService(agent_name, connection)"
                )
            agent_name, connection = None, agent_name
        super().__init__(connection)
        self._agent_name = None if agent_name is None else _checked_agent_name(agent_name)
        self.stream = stream or StreamConfig.channels()
        self._consumers: list[DurableConsumer] = []

    @property
    def agent_name(self) -> str:
        """This agent's name.

        Raises:
            ConfigurationError: no name yet (built as ``ChannelService(cfg)``, before ``connect(agent_name)``).
        """
        if self._agent_name is None:
            raise ConfigurationError(
                "this ChannelService has no agent name yet: call `await channels.connect(agent_name)` first"
            )
        return self._agent_name

    async def connect(self, agent_name: str | None = None) -> Self:
        """Connect if needed and make sure the channels stream exists; returns ``self``.

        Args:
            agent_name: this agent's name (the seed's ``connect(agent_name)``); required when the
                service was built without one, and must match when it was.

        Raises:
            InvalidNameError: the agent name is empty.
            ConfigurationError: no agent name at all, or one that differs from the constructor's.
        """
        if agent_name is not None:
            name = _checked_agent_name(agent_name)
            if self._agent_name is not None and name != self._agent_name:
                raise ConfigurationError(
                    f"ChannelService was built for agent {self._agent_name!r}; connect({name!r}) names another"
                )
            self._agent_name = name
        elif self._agent_name is None:
            raise ConfigurationError("ChannelService(cfg) needs the agent name: `await channels.connect(agent_name)`")
        return await super().connect()

    async def _setup(self) -> None:
        await self.connection.ensure_stream(self.stream)

    async def _teardown(self) -> None:
        """Stop this service's subscriptions (newest first)."""
        consumers, self._consumers = self._consumers, []
        for consumer in reversed(consumers):
            await consumer.stop()

    @staticmethod
    def subject_for(channel: str) -> str:
        """The subject of ``channel`` (``ship.channel.{channel}``), validated."""
        validate_subject(channel, "channel")
        return f"{CHANNEL_SUBJECT_PREFIX}.{channel}"

    def durable_for(self, channel: str) -> str:
        """This agent's durable consumer name for ``channel`` (``{agent}_{channel}``, sanitized)."""
        validate_subject(channel, "channel")
        return validate_consumer_name(sanitize_consumer_name(f"{self.agent_name}_{channel}"), "durable name")

    async def send_message(self, channel: str, content: str, metadata: Any = None) -> ChannelMessage:
        """Publish a message from this agent to ``channel`` and wait for the JetStream ack.

        Raises:
            InvalidNameError: invalid channel name (nothing is sent).
            SerializationError: ``content`` is not a string or ``metadata`` is not JSON-able.
            StreamNotFoundError: no stream captures the channel's subject (checked).
            ClusterUnavailableError: no stream leader answered within the failover deadline.
        """
        subject = self.subject_for(channel)
        if not isinstance(content, str):
            raise SerializationError(f"channel message content must be str, got {type(content).__name__}")
        try:
            message = ChannelMessage.new(channel, self.agent_name, content, metadata)
        except ValidationError as exc:
            raise SerializationError(f"cannot build a ChannelMessage for {channel!r}: {exc}") from exc
        await publish_acked(self.connection, subject, message.to_json(), what=f"channel publish to {subject!r}")
        return message

    @overload
    async def subscribe(
        self,
        channel: str,
        handler: ChannelHandler,
        *,
        replay_history: bool = False,
        max_in_flight: int = 1,
        nak_delay_s: float = 1.0,
    ) -> DurableConsumer: ...

    @overload
    async def subscribe(
        self,
        channel: str,
        replay_history: bool,
        handler: ChannelHandler,
        /,
        *,
        max_in_flight: int = 1,
        nak_delay_s: float = 1.0,
    ) -> DurableConsumer: ...

    async def subscribe(
        self,
        channel: str,
        *args: ChannelHandler | bool,
        handler: ChannelHandler | None = None,
        replay_history: bool | None = None,
        max_in_flight: int = 1,
        nak_delay_s: float = 1.0,
    ) -> DurableConsumer:
        """Receive the channel's messages from other agents through durable ``{agent}_{channel}``.

        Two call shapes: shipkit's ``subscribe(channel, handler, replay_history=False)`` and the
        seed's ``subscribe(channel, replay_history, handler)``, told apart by type (a bool
        second argument versus a callable).

        A new durable starts with the retained history (``replay_history=True``) or with new
        messages only; an existing durable resumes from its ack floor either way. Messages are
        acked after the handler returns and nak'ed with ``nak_delay_s`` if it raises; this
        agent's own messages and undecodable ones are acked without calling the handler.

        Returns:
            The running consumer; ``await consumer.stop()`` stops it (the durable is kept).

        Raises:
            InvalidNameError: invalid channel name (nothing is sent).
            ConfigurationError: the arguments fit neither call shape, or the handler is not async.
            StreamNotFoundError: the channels stream does not exist (call :meth:`connect`).
        """
        on_message, replay = _subscribe_arguments(args, handler, replay_history)
        subject = self.subject_for(channel)
        consumer = DurableConsumer(
            self.connection,
            stream=self.stream.name,
            filter_subject=subject,
            durable=self.durable_for(channel),
            handler=self._message_handler(on_message),
            deliver="all" if replay else "new",
            max_in_flight=max_in_flight,
            nak_delay_s=nak_delay_s,
        )
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    def _message_handler(self, handler: ChannelHandler) -> Callable[[Any], Awaitable[None]]:
        agent = self.agent_name

        async def on_msg(msg: Any) -> None:
            message = ChannelMessage.from_json(msg.data)  # SerializationError: acked and logged
            if message.sender != agent:
                await handler(message)

        return on_msg

    async def get_channel_history(self, channel: str, limit: int = 50) -> list[ChannelMessage]:
        """The most recent ``limit`` messages of ``channel``, oldest first.

        Undecodable messages are skipped with a log line (so fewer may be returned).

        Raises:
            InvalidNameError: invalid channel name.
            ConfigurationError: ``limit`` is negative.
            StreamNotFoundError: the channels stream does not exist.
        """
        subject = self.subject_for(channel)
        if limit < 0:
            raise ConfigurationError(f"history limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        reader = _HistoryReader(self.connection, self.stream.name, subject)
        raw = await reader.last(limit)
        messages: list[ChannelMessage] = []
        for data in raw:
            try:
                messages.append(ChannelMessage.from_json(data))
            except SerializationError as exc:
                log.warning("message.undecodable", subject=subject, reason=str(exc)[:300], skipped=True)
        return messages


_SUBSCRIBE_SHAPES = (
    "subscribe(channel, handler, replay_history=False) or the seed's subscribe(channel, replay_history, handler)"
)


def _checked_agent_name(agent_name: object) -> str:
    if not isinstance(agent_name, str) or not agent_name.strip():
        raise InvalidNameError(f"agent name must be a non-empty string, got {agent_name!r}")
    return agent_name


def _subscribe_arguments(
    args: tuple[ChannelHandler | bool, ...], handler: ChannelHandler | None, replay_history: bool | None
) -> tuple[ChannelHandler, bool]:
    """The handler and replay flag of a :meth:`ChannelService.subscribe` call, in either shape."""
    match args:
        case (bool() as replay, found) if handler is None and replay_history is None and callable(found):
            chosen, replay_flag = found, replay  # the seed's (channel, replay_history, handler)
        case (bool() as replay,) if handler is not None and replay_history is None:
            chosen, replay_flag = handler, replay  # the seed's order, handler by keyword
        case (found,) if handler is None and not isinstance(found, bool) and callable(found):
            chosen, replay_flag = found, bool(replay_history)
        case () if handler is not None:
            chosen, replay_flag = handler, bool(replay_history)
        case _:
            given = ", ".join(type(arg).__name__ for arg in args) or "no positional arguments"
            raise ConfigurationError(f"ChannelService.subscribe got ({given}): call {_SUBSCRIBE_SHAPES}")
    check_async(chosen, "channel handler")
    return chosen, replay_flag


class _HistoryReader:
    """Reads the last N messages of one subject of a stream without scanning older ones.

    ``count(seq)`` = messages on the subject at or after stream sequence ``seq``, read as the
    ``num_pending`` of a throwaway consumer starting there (one API call, no messages moved).
    """

    def __init__(self, connection: ConnectionManager, stream: str, subject: str) -> None:
        self._connection = connection
        self._stream = stream
        self._subject = subject

    async def last(self, limit: int) -> list[bytes]:
        js = self._connection.jetstream
        with translate_nats_errors(f"stream info {self._stream} for {self._subject!r}"):
            info = await js.stream_info(self._stream, subjects_filter=self._subject)
        state = info.state
        total = (state.subjects or {}).get(self._subject, 0)
        if total == 0:
            return []
        start = state.first_seq if total <= limit else await self._start_of_last(limit, state.first_seq, state.last_seq)
        return await self._read(start, limit)

    async def _start_of_last(self, limit: int, first: int, last: int) -> int:
        """The largest sequence ``s`` with ``count(s) >= limit``: where the last ``limit`` begin."""
        high = last + 1  # count(high) == 0 < limit
        span = limit
        while True:  # gallop back from the end: recent messages are the likely answer
            low = max(first, last - span + 1)
            if await self._count(low) >= limit:
                break
            high, span = low, span * 2
        while high - low > 1:
            middle = (low + high) // 2
            if await self._count(middle) >= limit:
                low = middle
            else:
                high = middle
        return low

    async def _count(self, seq: int) -> int:
        name, info = await self._create(seq)
        await self._delete(name)
        return int(info.num_pending)

    async def _create(self, seq: int) -> tuple[str, Any]:
        name = f"shipkit_history_{_nuid.next().decode()}"
        config = api.ConsumerConfig(
            name=name,
            filter_subject=self._subject,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=seq,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=60.0,  # a safety net: deleted explicitly right after use
        )
        with translate_nats_errors(f"history consumer on {self._stream} for {self._subject!r}"):
            info = await self._connection.jetstream.add_consumer(self._stream, config=config)
        return name, info

    async def _delete(self, name: str) -> None:
        # fire-and-forget: the reply would only cost a round trip; inactive_threshold covers a loss
        await self._connection.client.publish(f"$JS.API.CONSUMER.DELETE.{self._stream}.{name}", b"")

    async def _read(self, start: int, limit: int) -> list[bytes]:
        """Up to ``limit`` message bodies on the subject from sequence ``start`` on."""
        name, _ = await self._create(start)
        client = self._connection.client
        inbox = client.new_inbox()
        out: list[bytes] = []
        with translate_nats_errors(f"read history of {self._subject!r}"):
            sub = await client.subscribe(inbox)
            try:
                request = dumps({"batch": limit, "no_wait": True})
                await client.publish(pull_next_subject(self._stream, name), request, reply=inbox)
                while len(out) < limit:
                    msg = await sub.next_msg(timeout=self._connection.config.request_timeout_s)
                    if not msg.reply:  # a status (404 no more messages, 408): the batch is over
                        break
                    out.append(msg.data)
            finally:
                await sub.unsubscribe()
                await self._delete(name)
        return out
