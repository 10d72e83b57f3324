"""The shipkit agent caller against a shipkit host and against the reference SDK's host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from synadia_ai.agent_service import AgentService, PromptStream
from synadia_ai.agents import Envelope, ResponseChunk, StatusChunk

from shipkit import Service, ServiceError
from shipkit.agents import Agents, Attachment, Query, Response, Status
from shipkit.errors import NatsTimeoutError
from shipkit.server import NatsServer
from shipkit.service.agent import AgentContext
from shipkit.service.agent_protocol import AgentPrompt
from shipkit.testing import run_service


class Probe:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.closed = asyncio.Event()


def make_service(probe: Probe) -> Service:
    service = Service("callees")

    @service.agent("echo", owner="acme", heartbeat_s=1)
    async def echo(prompt: AgentPrompt, ctx: AgentContext) -> AsyncIterator[str]:
        if prompt.text == "fail":
            raise RuntimeError("no model")
        if prompt.text == "forever":
            probe.started.set()
            try:
                yield "first"
                await asyncio.Event().wait()  # until cancelled
            finally:
                probe.closed.set()
        await ctx.status("working")
        if prompt.text == "ask":
            yield f"answer: {await ctx.ask('Which city?', timeout_s=5)}"
        for attachment in prompt.attachments:
            yield f"{attachment.filename}={attachment.data.decode()}"
        if prompt.attachments:
            yield Response("echoed", prompt.attachments)
        yield prompt.text

    return service


async def sdk_handler(envelope: Envelope, stream: PromptStream) -> None:
    """The same agent, written with the reference host SDK."""
    if envelope.prompt == "fail":
        raise RuntimeError("no model")
    await stream.send(StatusChunk(status="working"))
    if envelope.prompt == "ask":
        answer = await stream.ask("Which city?", timeout=5)
        await stream.send(f"answer: {answer.prompt}")
    for attachment in envelope.attachments or []:
        await stream.send(f"{attachment.filename}={attachment.to_bytes().decode()}")
    if envelope.attachments:
        await stream.send(ResponseChunk(text="echoed", attachments=envelope.attachments))
    await stream.send(envelope.prompt)


@pytest.fixture(scope="module")
def server(module_server: NatsServer) -> NatsServer:
    """The module's shared server."""
    return module_server


@pytest_asyncio.fixture(params=["shipkit", "sdk"])
async def host(request: pytest.FixtureRequest, server: NatsServer) -> AsyncIterator[Probe]:
    """The ``echo`` agent hosted by shipkit, or by the reference SDK's AgentService."""
    probe = Probe()
    if request.param == "shipkit":
        async with run_service(make_service(probe), server.url):
            yield probe
        return
    nc = await nats.connect(server.url)
    agent = AgentService(agent="echo", owner="acme", session_name="default", nc=nc, heartbeat_interval_s=1)
    agent.on_prompt(sdk_handler)
    await agent.start()
    try:
        yield probe
    finally:
        await agent.stop()
        await nc.close()


@pytest_asyncio.fixture
async def agents(server: NatsServer) -> AsyncIterator[Agents]:
    async with Agents(server.url) as client:
        yield client


async def collect(chunks: AsyncIterator[Any], into: list[Any]) -> list[Any]:
    async for chunk in chunks:
        into.append(chunk)
    return into


async def test_discover_with_liveness(host: Probe, agents: Agents) -> None:
    """Discovery lists the agent with its metadata; its instance is live once a heartbeat arrived."""
    heard = asyncio.Event()
    agents.on_heartbeat(lambda beat: heard.set() if beat["agent"] == "echo" else None)
    await asyncio.wait_for(heard.wait(), 5)
    [info] = [a for a in await agents.discover() if a.agent == "echo"]
    assert (info.owner, info.session, info.protocol_version) == ("acme", "default", "0.3")
    [instance] = info.live_instances()
    assert instance.prompt_subject == "agents.prompt.echo.acme.default"
    assert instance.last_heartbeat is not None and instance.interval_s == 1 and instance.attachments_ok


async def test_response_and_status(host: Probe, agents: Agents) -> None:
    """Response and status chunks arrive typed; the protocol's ack never surfaces."""
    got = await collect(agents.prompt("echo", "hello"), [])
    assert got == [Status("working"), Response("hello")]


async def test_query_answered_sync_and_async(host: Probe, agents: Agents) -> None:
    """on_query answers mid-stream questions, as a plain or an async callback."""

    async def async_answer(query: Query) -> str:
        return "Oslo"

    sync = await collect(agents.prompt("echo", "ask", on_query=lambda q: "Paris"), [])
    asynchronous = await collect(agents.prompt("echo", "ask", on_query=async_answer), [])
    assert [c.prompt for c in sync if isinstance(c, Query)] == ["Which city?"]
    assert all(c.answered for c in sync if isinstance(c, Query))
    assert Response("answer: Paris") in sync and Response("answer: Oslo") in asynchronous


async def test_attachment(host: Probe, agents: Agents) -> None:
    """An attachment travels base64-encoded both ways: decoded at the agent, and back in a response."""
    got = await collect(agents.prompt("echo", "see file", attachments=[Attachment("a.txt", b"abc")]), [])
    assert Response("a.txt=abc") in got
    assert Response("echoed", (Attachment("a.txt", b"abc"),)) in got


async def test_error(host: Probe, agents: Agents) -> None:
    """An agent failure is a ServiceError with the protocol's code."""
    with pytest.raises(ServiceError) as caught:
        await collect(agents.prompt("echo", "fail"), [])
    assert caught.value.code == 500


async def test_unknown_agent(agents: Agents) -> None:
    """Prompting a name nobody hosts fails with a 404 naming it."""
    with pytest.raises(ServiceError, match="nobody-here") as caught:
        await collect(agents.prompt("nobody-here", "hi"), [])
    assert caught.value.code == 404


async def test_break_cancels_the_shipkit_agent(server: NatsServer, agents: Agents) -> None:
    """Leaving the loop closes a shipkit agent's generator (its finally runs)."""
    probe = Probe()
    async with run_service(make_service(probe), server.url) as runtime:
        stream = agents.prompt("echo", "forever")
        assert await anext(stream) == Response("first")
        await stream.aclose()
        await asyncio.wait_for(probe.closed.wait(), 5)
    assert runtime.counts.cancelled == 1  # shutdown waited for the prompt's task to settle


async def test_inactivity_timeout(server: NatsServer, agents: Agents) -> None:
    """A stream silent longer than the inactivity timeout raises NatsTimeoutError naming the agent."""
    probe = Probe()
    async with run_service(make_service(probe), server.url):
        with pytest.raises(NatsTimeoutError, match="echo"):
            await collect(agents.prompt("echo", "forever", inactivity_timeout_s=0.3), [])
        await asyncio.wait_for(probe.closed.wait(), 5)
