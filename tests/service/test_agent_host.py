"""Hosting agents: the protocol seen by raw nats-py, and the reference SDK caller prompting a shipkit agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from synadia_ai.agents import Agents, ProtocolError, Query, ResponseChunk, StatusChunk
from synadia_ai.agents import Attachment as SdkAttachment

from shipkit import Service
from shipkit.errors import ConfigurationError
from shipkit.server import NatsServer
from shipkit.service.agent import AgentContext
from shipkit.service.agent_protocol import AgentPrompt, Attachment, Response
from shipkit.service.description import describe
from shipkit.service.endpoint import ERROR_CODE_HEADER, ERROR_HEADER
from shipkit.service.streaming import STREAM_HEADER
from shipkit.testing import run_service

PROMPT = "agents.prompt.helper.acme.default"


def make_service() -> Service:
    service = Service("helpers", "2.0.0")

    @service.agent("helper", owner="acme", description="a test helper", heartbeat_s=1, keepalive_s=0.2)
    async def helper(prompt: AgentPrompt, ctx: AgentContext) -> AsyncIterator[str]:
        if prompt.text == "fail":
            raise RuntimeError("model exploded")
        if prompt.text == "fail-later":
            yield "partial"
            raise RuntimeError("model exploded later")
        await ctx.status("thinking")
        if prompt.text == "ask":
            city = await ctx.ask("Which city?", timeout_s=5)
            yield f"Sunny in {city}."
            return
        if prompt.text == "report":
            yield Response("see attached", (Attachment("report.csv", b"a,b\n1,2\n"),))
            return
        if prompt.text == "hang":
            await asyncio.Event().wait()  # until cancelled at shutdown
        if prompt.text == "slow":
            await asyncio.sleep(0.6)  # silent long enough for keep-alives to go out
        for attachment in prompt.attachments:
            yield f"{attachment.filename}:{len(attachment.data)}"
        for word in prompt.text.split():
            yield word

    @service.agent("strict", owner="acme", attachments_ok=False, max_payload="1KB")
    async def strict(prompt: AgentPrompt) -> AsyncIterator[str]:
        yield prompt.text

    return service


@pytest.fixture(scope="module")
def server(module_server: NatsServer) -> NatsServer:
    """The module's shared server."""
    return module_server


@pytest_asyncio.fixture
async def nc(server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(server.url)
    try:
        yield client
    finally:
        await client.close()


async def raw_prompt(nc: NatsClient, subject: str, body: bytes, limit: int = 50) -> list[Any]:
    """Every message of one prompt's stream up to and including the terminator."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, body, reply=inbox)
    messages = []
    for _ in range(limit):
        msg = await sub.next_msg(timeout=5)
        messages.append(msg)
        if not msg.data and not msg.headers:
            break
    await sub.unsubscribe()
    return messages


def chunks(messages: list[Any]) -> list[Any]:
    return [json.loads(m.data) for m in messages if m.data and ERROR_CODE_HEADER not in (m.headers or {})]


async def test_leading_ack_chunks_and_terminator(server: NatsServer, nc: NatsClient) -> None:
    """The first message is the ack (with the cancel header), then status and responses, then the terminator."""
    async with run_service(make_service(), server.url):
        messages = await raw_prompt(nc, PROMPT, b"hello world")
    assert json.loads(messages[0].data) == {"type": "status", "data": "ack"}
    assert STREAM_HEADER in messages[0].headers
    assert chunks(messages)[1:] == [
        {"type": "status", "data": "thinking"},
        {"type": "response", "data": "hello"},
        {"type": "response", "data": "world"},
    ]
    assert messages[-1].data == b"" and not messages[-1].headers


async def test_keep_alives_while_silent(server: NatsServer, nc: NatsClient) -> None:
    """A silent agent sends extra ack status chunks before its answer."""
    async with run_service(make_service(), server.url):
        messages = await raw_prompt(nc, PROMPT, json.dumps({"prompt": "slow"}).encode())
    acks = [c for c in chunks(messages) if c == {"type": "status", "data": "ack"}]
    assert len(acks) >= 2 and chunks(messages)[-1] == {"type": "response", "data": "slow"}


async def test_error_rules(server: NatsServer, nc: NatsClient) -> None:
    """Refusals and failures are error headers then the terminator; bad input never reaches the agent."""
    async with run_service(make_service(), server.url):
        failed = await raw_prompt(nc, PROMPT, b"fail")
        later = await raw_prompt(nc, PROMPT, b"fail-later")
        empty = await raw_prompt(nc, PROMPT, b"")
        malformed = await raw_prompt(nc, PROMPT, b'{"prompt": 3}')
        too_big = await raw_prompt(nc, "agents.prompt.strict.acme.default", b"x" * 2000)
        attached = json.dumps({"prompt": "x", "attachments": [{"filename": "a", "content": "YQ=="}]}).encode()
        refused = await raw_prompt(nc, "agents.prompt.strict.acme.default", attached)
    assert failed[-2].headers[ERROR_CODE_HEADER] == "500" and "model exploded" in failed[-2].headers[ERROR_HEADER]
    assert chunks(later)[-1] == {"type": "response", "data": "partial"}
    assert later[-2].headers[ERROR_CODE_HEADER] == "500"
    for stream in (empty, malformed, too_big, refused):
        assert len(stream) == 2 and stream[0].headers[ERROR_CODE_HEADER] == "400"
        assert stream[1].data == b"" and not stream[1].headers
    assert "max_payload 1KB" in too_big[0].headers[ERROR_HEADER]
    assert "attachments" in refused[0].headers[ERROR_HEADER]
    for stream in (failed, later):
        assert stream[-1].data == b"" and not stream[-1].headers


async def test_registration_heartbeats_and_status(server: NatsServer, nc: NatsClient) -> None:
    """$SRV.INFO.agents carries the metadata; heartbeats and the status endpoint declare the prompt endpoint."""
    beats = await nc.subscribe("agents.hb.helper.acme.default")
    async with run_service(make_service(), server.url):
        first = json.loads((await beats.next_msg(timeout=5)).data)
        second = json.loads((await beats.next_msg(timeout=5)).data)
        status = json.loads((await nc.request("agents.status.helper.acme.default", b"", timeout=5)).data)
        inbox = nc.new_inbox()
        infos = await nc.subscribe(inbox)
        await nc.publish("$SRV.INFO.agents", b"", reply=inbox)
        found = [json.loads((await infos.next_msg(timeout=5)).data) for _ in range(2)]
    info = next(i for i in found if i["metadata"]["agent"] == "helper")
    assert info["name"] == "agents" and info["version"] == "2.0.0"
    assert info["metadata"] == {"agent": "helper", "owner": "acme", "session": "default", "protocol_version": "0.3"}
    prompt_ep = next(e for e in info["endpoints"] if e["name"] == "prompt")
    assert prompt_ep["subject"] == PROMPT and prompt_ep["queue_group"] == "agents"
    assert prompt_ep["metadata"]["attachments_ok"] == "true"
    assert first["instance_id"] == second["instance_id"] == info["id"] == status["instance_id"]
    assert first["interval_s"] == 1 and first["endpoints"]["prompt"]["subject"] == PROMPT
    assert all(i["name"] == "agents" for i in found) and len({i["id"] for i in found}) == 2  # an id per agent


async def test_heartbeats_stop_at_shutdown(server: NatsServer, nc: NatsClient) -> None:
    """Shutdown ends every heartbeat task: none is left running once it returns."""
    beats = await nc.subscribe("agents.hb.helper.acme.default")
    async with run_service(make_service(), server.url):
        await beats.next_msg(timeout=5)
        assert {t.get_name() for t in asyncio.all_tasks()} >= {"hb:helper", "hb:strict"}
    assert not {t.get_name() for t in asyncio.all_tasks() if not t.done()} & {"hb:helper", "hb:strict"}


async def test_shutdown_mid_prompt_sends_503_then_terminator(server: NatsServer, nc: NatsClient) -> None:
    """A prompt still running when the grace period ends gets a 503 error frame and the terminator."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    async with run_service(make_service(), server.url, graceful_timeout_s=0.1) as runtime:
        await nc.publish(PROMPT, b"hang", reply=inbox)
        ack = await sub.next_msg(timeout=5)
        thinking = await sub.next_msg(timeout=5)
    error, terminator = await sub.next_msg(timeout=5), await sub.next_msg(timeout=5)
    assert json.loads(ack.data)["data"] == "ack" and json.loads(thinking.data)["data"] == "thinking"
    assert error.headers[ERROR_CODE_HEADER] == "503"
    assert terminator.data == b"" and not terminator.headers
    assert runtime.counts.cancelled == 1


async def test_prompt_stats_count_each_stream_once(server: NatsServer, nc: NatsClient) -> None:
    """$SRV.STATS of the agents service counts a prompt once, and a failed one as an error."""
    async with run_service(make_service(), server.url):
        await raw_prompt(nc, PROMPT, b"one two three")
        await raw_prompt(nc, PROMPT, b"fail")
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        await nc.publish("$SRV.STATS.agents", b"", reply=inbox)
        stats = [json.loads((await replies.next_msg(timeout=5)).data) for _ in range(2)]
    helper = next(s for s in stats if any(e["subject"] == PROMPT for e in s["endpoints"]))
    prompt_stats = next(e for e in helper["endpoints"] if e["name"] == "prompt")
    assert (prompt_stats["num_requests"], prompt_stats["num_errors"]) == (2, 1)
    assert prompt_stats["processing_time"] > 0


def test_inspect_lists_the_agents() -> None:
    """describe() (shipkit inspect) lists every agent with its owner and prompt subject."""
    described = describe(make_service())
    assert described["agents"] == [
        {"agent": "helper", "owner": "acme", "prompt": PROMPT},
        {"agent": "strict", "owner": "acme", "prompt": "agents.prompt.strict.acme.default"},
    ]


def test_agent_must_be_an_async_generator() -> None:
    """A coroutine function or a bad name is refused at registration with the function named."""
    service = Service("bad")

    async def not_a_generator(prompt: AgentPrompt) -> str:
        return prompt.text

    with pytest.raises(ConfigurationError, match="async generator"):
        service.add_agent("x", not_a_generator, owner="acme")

    async def gen(prompt: AgentPrompt) -> AsyncIterator[str]:
        yield prompt.text

    with pytest.raises(ConfigurationError, match="lowercase"):
        service.add_agent("Bad_Name", gen, owner="acme")


# -- the reference SDK caller against a shipkit agent -----------------------------------------------


async def sdk_prompt(agents: Agents, text: str, **options: Any) -> list[Any]:
    [agent] = [a for a in await agents.discover() if a.agent == "helper"]
    received: list[Any] = []
    async for item in agent.prompt(text, **options):
        if isinstance(item, Query):
            await item.reply("Paris")
        received.append(item)
    return received


async def test_sdk_caller_streams_status_query_attachment(server: NatsServer, nc: NatsClient) -> None:
    """The reference caller discovers the agent, streams response and status, answers a query, sends and gets files."""
    async with run_service(make_service(), server.url):
        agents = Agents(nc=nc)
        try:
            plain = await sdk_prompt(agents, "hello world")
            asked = await sdk_prompt(agents, "ask")
            attached = await sdk_prompt(
                agents, "with file", attachments=[SdkAttachment.from_bytes("notes.txt", b"12345")]
            )
            reported = await sdk_prompt(agents, "report")
            live = [a for a in await agents.discover() if a.agent == "helper"]
            assert agents.liveness(live[0].instance_id) is not None
        finally:
            await agents.close()
    assert [c.text for c in plain if isinstance(c, ResponseChunk)] == ["hello", "world"]
    assert StatusChunk(status="thinking") in plain
    assert [c.prompt for c in asked if isinstance(c, Query)] == ["Which city?"]
    assert [c.text for c in asked if isinstance(c, ResponseChunk)] == ["Sunny in Paris."]
    assert [c.text for c in attached if isinstance(c, ResponseChunk)] == ["notes.txt:5", "with", "file"]
    [report] = [c for c in reported if isinstance(c, ResponseChunk)]
    assert report.text == "see attached" and report.attachments is not None
    assert (report.attachments[0].filename, report.attachments[0].to_bytes()) == ("report.csv", b"a,b\n1,2\n")


async def test_sdk_caller_sees_errors(server: NatsServer, nc: NatsClient) -> None:
    """A failing agent reaches the reference caller as its ProtocolError with the code."""
    async with run_service(make_service(), server.url):
        agents = Agents(nc=nc)
        try:
            with pytest.raises(ProtocolError, match="500"):
                await sdk_prompt(agents, "fail")
        finally:
            await agents.close()
