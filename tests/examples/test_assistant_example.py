"""The assistant example end to end: streamed tokens, a clarifying question, research as a job."""

from __future__ import annotations

from examples.assistant.app import fake_model, service
from shipkit import ConnectionManager
from shipkit.agents import Agents, Query, Response, Status
from shipkit.testing import run_service


async def test_weather_asks_for_the_city_then_streams(shipkit_connection: ConnectionManager) -> None:
    """Without a city the agent asks one mid-stream, then streams the fake model's tokens."""
    async with run_service(service, shipkit_connection), Agents(shipkit_connection) as agents:
        chunks = [c async for c in agents.prompt("assistant", "What's the weather?", on_query=lambda q: "Oslo")]
    assert [c.prompt for c in chunks if isinstance(c, Query)] == ["Which city?"]
    assert Status("thinking") in chunks
    text = "".join(c.text for c in chunks if isinstance(c, Response))
    assert text == "".join(fake_model("What's the weather? in Oslo")) == "You asked: what's the weather in oslo."


async def test_research_runs_as_a_job_with_progress(shipkit_connection: ConnectionManager) -> None:
    """A research prompt becomes a job whose progress arrives as status chunks, then the summary."""
    async with run_service(service, shipkit_connection), Agents(shipkit_connection) as agents:
        chunks = [c async for c in agents.prompt("assistant", "research tidal power")]
    statuses = [c.text for c in chunks if isinstance(c, Status)]
    assert statuses[0].startswith("researching as job JOB-")
    # progress writes are coalesced per job (a few a second), the last one always: an ordered subset, ending at 4/4
    expected = [f"read source {n}/4" for n in range(1, 5)]
    assert statuses[1:] and statuses[-1] == expected[-1]
    assert statuses[1:] == [line for line in expected if line in statuses[1:]]
    summary = "".join(c.text for c in chunks if isinstance(c, Response)).strip()
    assert summary == "4 sources agree that tidal power is promising"
