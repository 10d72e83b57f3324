"""The Python blocks of docs/agents.md run as written: a streaming handler, an agent, a caller."""

from __future__ import annotations

import re
import types
from pathlib import Path

from shipkit import Client, ConnectionManager
from shipkit.testing import run_service

BLOCKS = re.findall(
    r"^```python\n(.*?)^```", (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text(), re.M | re.S
)


def load(index: int) -> types.ModuleType:
    """Execute block ``index`` as a module."""
    module = types.ModuleType(f"agents_guide_{index}")
    exec(compile(BLOCKS[index], module.__name__, "exec"), module.__dict__)
    return module


async def test_streaming_handler_block(shipkit_connection: ConnectionManager) -> None:
    """The streaming handler of the guide yields its tokens to Client.stream."""
    module = load(0)
    async with run_service(module.service, shipkit_connection):
        tokens = await module.read(Client(shipkit_connection))
    assert [t.text for t in tokens] == ["t0", "t1", "t2", "t3", "t4"]


async def test_agent_and_caller_blocks(shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """The guide's caller talks to the guide's agent: the question is answered, the answer streamed."""
    host, caller = load(1), load(2)
    async with run_service(host.service, shipkit_connection):
        answer = await caller.chat(shipkit_nats_url)
    assert answer == "(read notes.txt: 3 bytes) What's the weather? in Paris "
