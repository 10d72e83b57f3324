"""The chat example end to end: Alice and Bob talk over ``general`` for a bounded number of turns."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from apps.cli_process import SHIPKIT_CLI, ShipkitProcess, child_env
from nats.aio.msg import Msg

from examples.chat import alice, bob
from examples.chat.agent import CHANNEL, LAST_TURN, conversation_of
from shipkit import ChannelMessage, Client, ConnectionManager, ServiceError
from shipkit.primitives.channels import ChannelService
from shipkit.testing import run_service

REPO_ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def channel_messages(connection: ConnectionManager) -> AsyncIterator[asyncio.Queue[ChannelMessage]]:
    """Every message published to ``general`` from now on (a plain core subscription sees JetStream publishes)."""
    queue: asyncio.Queue[ChannelMessage] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(ChannelMessage.from_json(msg.data))

    subscription = await connection.client.subscribe(f"ship.channel.{CHANNEL}", cb=on_msg)
    await connection.client.flush()
    try:
        yield queue
    finally:
        await subscription.unsubscribe()


async def take(queue: asyncio.Queue[ChannelMessage], count: int) -> list[ChannelMessage]:
    """The next ``count`` messages, each within 5 s."""
    return [await asyncio.wait_for(queue.get(), timeout=5) for _ in range(count)]


def said(messages: list[ChannelMessage]) -> list[tuple[str, int, str | None]]:
    """``(sender, turn, to)`` of each message."""
    return [(m.sender, *conversation_of(m)[1:]) for m in messages]


async def test_two_agents_talk_for_a_bounded_number_of_turns(shipkit_connection: ConnectionManager) -> None:
    """Alice answers the greeting of Bob (who ignores hers, sent before he joined); both stop at the last turn."""
    async with (
        channel_messages(shipkit_connection) as heard,
        run_service(alice.service, shipkit_connection),
        run_service(bob.service, shipkit_connection),
    ):
        conversation = await take(heard, 2 + LAST_TURN)
        # Barrier: each agent handles the channel in order, so its answer to this probe proves it
        # has handled the goodbye before it, without answering it.
        tester = await ChannelService("tester", shipkit_connection).connect()
        await tester.send_message(CHANNEL, "Status check, everyone?")
        probe_and_answers = await take(heard, 3)
    assert said(conversation) == [
        ("alice", 0, None),  # greeted before Bob joined: Bob ignores what was said before he joined
        ("bob", 0, None),
        ("alice", 1, "bob"),
        ("bob", 2, "alice"),
        ("alice", 3, "bob"),
        ("bob", LAST_TURN, "alice"),
    ]
    assert conversation[2].content == "Hi bob, welcome! Shall we go through the launch checklist?"
    assert conversation[-1].content == "Perfect. Signing off until launch, alice!"
    assert len({conversation_of(m)[0] for m in conversation[1:]}) == 1  # one conversation, opened by Bob
    assert said(probe_and_answers[:1]) == [("tester", 0, None)]
    assert sorted(said(probe_and_answers[1:])) == [("alice", 1, "tester"), ("bob", 1, "tester")]


async def test_say_opens_a_conversation(shipkit_connection: ConnectionManager, shipkit_client: Client) -> None:
    """``alice.say`` posts plain text as a new conversation (Bob answers it); an empty text is a 400."""
    async with channel_messages(shipkit_connection) as heard, run_service(alice.service, shipkit_connection):
        await take(heard, 1)  # Alice's greeting
        async with run_service(bob.service, shipkit_connection):
            greeting_exchange = await take(heard, 1 + LAST_TURN)
            reply = await shipkit_client.request("alice.say", "Countdown starts at noon.")
            opened = await take(heard, 1 + LAST_TURN)
            sent = await shipkit_client.request("alice.sent")
        with pytest.raises(ServiceError) as empty:
            await shipkit_client.request("alice.say", "  ")
    assert said(greeting_exchange)[0] == ("bob", 0, None)
    assert opened[0].message_id == reply["message_id"]
    assert said(opened) == [
        ("alice", 0, None),
        ("bob", 1, "alice"),
        ("alice", 2, "bob"),
        ("bob", 3, "alice"),
        ("alice", LAST_TURN, "bob"),
    ]
    assert [m["content"] for m in sent][-1] == "Great. Talk to you after launch, bob!"
    assert empty.value.code == 400


async def _shipkit_run(target: str, nats_url: str) -> ShipkitProcess:
    process = await asyncio.create_subprocess_exec(
        *SHIPKIT_CLI,
        "run",
        target,
        "--nats-url",
        nats_url,
        "--log-format",
        "json",
        cwd=REPO_ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return ShipkitProcess(process)


async def test_two_shipkit_run_processes_talk(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """``shipkit run examples.chat.alice:service`` and ``...bob:service`` reach the last turn, then stop on SIGTERM."""
    processes: list[ShipkitProcess] = []
    try:
        async with channel_messages(shipkit_connection) as heard:
            for target in ("examples.chat.alice:service", "examples.chat.bob:service"):
                processes.append(await _shipkit_run(target, shipkit_nats_url))
            for process in processes:
                await process.wait_for_log("service.started", timeout_s=30)
            async with asyncio.timeout(15):
                seen: list[ChannelMessage] = []
                while not seen or conversation_of(seen[-1])[1] < LAST_TURN:
                    seen.append(await heard.get())
        for process in processes:
            process.process.terminate()
        codes = [await process.wait_exit() for process in processes]
    finally:
        for process in processes:
            await process.kill()
    assert codes == [0, 0]
    assert {m.sender for m in seen} == {"alice", "bob"}
    assert all(conversation_of(m)[1] <= LAST_TURN for m in seen)
    assert all(len(process.logged("chat.joined")) == 1 for process in processes)
