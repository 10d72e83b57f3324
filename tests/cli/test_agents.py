"""``shipkit agents ls|prompt`` against a real server, with the agent hosted in a background thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from shipkit import Service
from shipkit.cli.agents import agents
from shipkit.server import NatsServer
from shipkit.service.agent import AgentContext
from shipkit.service.agent_protocol import AgentPrompt
from shipkit.testing import run_service


def make_service() -> Service:
    service = Service("cli-agents")

    @service.agent("teller", owner="acme", heartbeat_s=1)
    async def teller(prompt: AgentPrompt, ctx: AgentContext) -> AsyncIterator[str]:
        await ctx.status("looking")
        if prompt.text == "ask":
            name = await ctx.ask("Your name?", timeout_s=10)
            yield f"Hi {name}"
            return
        for attachment in prompt.attachments:
            yield f"[{attachment.filename}:{attachment.data.decode()}]"
        yield "once "
        yield "upon"

    return service


@pytest.fixture(scope="module")
def url(module_server: NatsServer) -> Iterator[str]:
    """The module's server, with the agent running in a thread on its own event loop (the CLI runs its own)."""
    server = module_server
    ready = threading.Event()
    failure: list[BaseException] = []
    stopping: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def host() -> None:
        stop = asyncio.Event()
        stopping.append((asyncio.get_running_loop(), stop))
        async with run_service(make_service(), server.url):
            ready.set()
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(host())
        except BaseException as exc:  # reported to the test below instead of vanishing in the thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert ready.wait(10) and not failure, failure
        yield server.url
    finally:
        for loop, stop in stopping:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The agents group configures structlog when nobody has: undo it after each test."""
    yield
    structlog.reset_defaults()


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(agents, [*args, "--nats-url", url], input=stdin, catch_exceptions=False)


def test_ls_table_and_json(url: str) -> None:
    """ls shows the agent with its owner, instances and protocol version, as a table and as JSON."""
    table = run(url, "ls").stdout.splitlines()
    assert table[0].split()[:3] == ["AGENT", "OWNER", "INSTANCES"]
    row = next(line.split() for line in table[1:] if line.startswith("teller"))
    assert row[:3] == ["teller", "acme", "1/1"] and row[-1] == "0.3" and row[3] != "-"
    [listed] = [a for a in json.loads(run(url, "ls", "--json").stdout) if a["agent"] == "teller"]
    assert listed["owner"] == "acme" and listed["instances"][0]["prompt_subject"] == "agents.prompt.teller.acme.default"


def test_prompt_streams_answer_and_status(url: str, tmp_path: Path) -> None:
    """prompt prints the response chunks on stdout and the status on stderr; --attach sends a file."""
    note = tmp_path / "note.txt"
    note.write_text("hey")
    result = run(url, "prompt", "teller", "story", "--owner", "acme", "--attach", str(note))
    assert result.exit_code == 0
    assert result.stdout == "[note.txt:hey]once upon\n"
    assert "[looking]" in result.stderr


def test_prompt_answers_a_query_from_stdin(url: str) -> None:
    """A query from the agent is asked on the terminal and the typed answer goes back."""
    result = run(url, "prompt", "teller", "ask", stdin="Ada\n")
    assert result.exit_code == 0 and result.stdout.endswith("Hi Ada\n")
    assert "Your name?" in result.stderr


def test_prompt_unknown_agent_fails_cleanly(url: str) -> None:
    """An agent nobody hosts is a one-line error and exit code 1."""
    result = run(url, "prompt", "nobody", "hi")
    assert result.exit_code == 1 and "no agent 'nobody'" in result.stderr
