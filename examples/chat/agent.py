"""A chat agent on the ``general`` channel; :mod:`examples.chat.alice` and :mod:`examples.chat.bob` are two of them.

The conversation protocol lives in each message's ``metadata`` (plain JSON, so agents written
with noesis-ship can take part)::

    {"conversation": "<message_id of the opener>", "turn": 2, "to": "alice"}

- An agent greets the channel when it starts (turn 0, addressed to nobody).
- It answers a message addressed to it, or to nobody, with turn + 1, addressed to the sender;
  at turn :data:`LAST_TURN` it says goodbye and nobody answers that: no endless ping-pong.
- Its own messages never reach it (the channel filters them), and it ignores messages sent
  before it started, so a first run does not answer the channel's whole history.
- A message without that metadata (a human typing into the channel) opens a conversation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from shipkit import ChannelMessage, Context, Service, ServiceError
from shipkit.primitives.channels import ChannelService

CHANNEL = "general"
LAST_TURN = 4
"""Turn of the last message of a conversation: the greeting (0) plus four replies."""


@dataclass
class Script:
    """What an agent says: its greeting, and its line for each turn 1 .. LAST_TURN of a conversation.

    Whoever answers a greeting speaks at the odd turns, the greeter at the even ones, so each
    agent has a line for every turn. ``{peer}`` is replaced by the other agent's name.
    """

    greeting: str
    lines: list[str]

    def __post_init__(self) -> None:
        if len(self.lines) != LAST_TURN:
            raise ValueError(f"a script needs {LAST_TURN} lines (turns 1 to {LAST_TURN}), got {len(self.lines)}")

    def line_for(self, turn: int, peer: str) -> str:
        """The text of this agent's message at ``turn`` (1 .. LAST_TURN) of a conversation with ``peer``."""
        return self.lines[turn - 1].format(peer=peer)


@dataclass
class _Session:
    """What a running agent holds: its channel handle and when it joined."""

    channels: ChannelService | None = None
    joined_at: float = 0.0
    sent: list[ChannelMessage] = field(default_factory=list)


def conversation_of(message: ChannelMessage) -> tuple[str, int, str | None]:
    """``(conversation, turn, to)`` of a message; a message without protocol metadata opens one."""
    meta = message.metadata if isinstance(message.metadata, dict) else {}
    turn = meta.get("turn")
    if not isinstance(turn, int) or isinstance(turn, bool):
        return message.message_id, 0, None
    conversation = meta.get("conversation")
    to = meta.get("to")
    return (
        conversation if isinstance(conversation, str) else message.message_id,
        turn,
        to if isinstance(to, str) else None,
    )


def make_agent(name: str, script: Script) -> Service:
    """A service for agent ``name``: it greets ``general`` at start and answers, up to :data:`LAST_TURN`."""
    session = _Session()

    async def send(text: str, metadata: dict[str, Any]) -> ChannelMessage:
        if session.channels is None:
            raise ServiceError(503, f"{name} is not on the channel")
        message = await session.channels.send_message(CHANNEL, text, metadata=metadata)
        session.sent.append(message)
        return message

    @contextlib.asynccontextmanager
    async def lifespan(ctx: Context) -> AsyncIterator[None]:
        session.channels = await ChannelService(name, ctx.connection).connect()
        session.joined_at = time.time()
        session.sent.clear()
        greeting = await send(script.greeting, {"turn": 0})
        ctx.log.info("chat.joined", channel=CHANNEL, message_id=greeting.message_id)
        try:
            yield
        finally:
            session.channels = None

    service = Service(name, version="1.0.0", description=f"{name}, a chat agent on #{CHANNEL}", lifespan=lifespan)

    @service.on_channel(CHANNEL, replay_history=True)  # nothing sent since we joined is missed
    async def on_general(message: ChannelMessage, ctx: Context) -> None:
        """Answer the other agent, turn by turn, until the conversation's last turn."""
        if message.timestamp < session.joined_at:
            return  # said before we joined
        conversation, turn, to = conversation_of(message)
        if to not in (None, name) or turn >= LAST_TURN:
            return
        text = script.line_for(turn + 1, message.sender)
        await send(text, {"conversation": conversation, "turn": turn + 1, "to": message.sender})
        ctx.log.info("chat.replied", to=message.sender, turn=turn + 1, conversation=conversation)

    @service.handler("say")
    async def say(text: str) -> dict[str, Any]:
        """Open a conversation on ``general`` with ``text`` (the request body, plain text)."""
        if not text.strip():
            raise ServiceError(400, "nothing to say: send the text as the request body")
        message = await send(text, {"turn": 0})
        return {"message_id": message.message_id}

    @service.handler("sent")
    async def sent() -> list[dict[str, Any]]:
        """What this agent said since it started, oldest first."""
        return [message.model_dump(mode="json") for message in session.sent]

    return service
