"""``shipkit agents``: find and prompt agents speaking the Synadia Agent Protocol for NATS.

A thin skin over :class:`~shipkit.agents.Agents`::

    shipkit agents ls [--json] [--listen 2]
    shipkit agents prompt assistant "What's the weather?" [--owner acme] [--attach notes.txt]
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shipkit.agents import AgentInfo, Agents, Attachment, Query, Response, Status
from shipkit.cli._common import format_table, quiet_library_logs
from shipkit.cli._connection_options import connection_options
from shipkit.config import NatsConfig
from shipkit.errors import ShipkitError

__all__ = ["agents"]

T = TypeVar("T")


def _run(nats_config: NatsConfig, action: Callable[[Agents], Awaitable[T]]) -> T:
    """Connect, run ``action``, close; shipkit errors become a clean CLI error (exit 1)."""

    async def main() -> T:
        config = nats_config.model_copy(update={"name": "shipkit-agents-cli", "max_reconnect_attempts": 0})
        async with Agents(config) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except ShipkitError as exc:
        raise click.ClickException(str(exc)) from exc


def _as_dict(info: AgentInfo) -> dict[str, Any]:
    return {
        "agent": info.agent,
        "owner": info.owner,
        "session": info.session,
        "protocol_version": info.protocol_version,
        "description": info.description,
        "instances": [
            {
                "instance_id": i.instance_id,
                "prompt_subject": i.prompt_subject,
                "alive": i.alive,
                "last_heartbeat": i.last_heartbeat,
                "interval_s": i.interval_s,
                "max_payload": i.max_payload,
                "attachments_ok": i.attachments_ok,
            }
            for i in info.instances
        ],
    }


def _row(info: AgentInfo) -> list[str]:
    beats = [i.last_heartbeat for i in info.instances if i.last_heartbeat]
    live = len(info.live_instances())
    return [
        info.agent,
        info.owner,
        f"{live}/{len(info.instances)}",
        max(beats) if beats else "-",
        info.protocol_version,
    ]


@click.group("agents")
def agents() -> None:
    """Find and prompt agents (the Synadia Agent Protocol for NATS)."""
    quiet_library_logs()  # keep stdout for the output: warnings only, on stderr


@agents.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--listen", type=float, default=0.0, show_default=True, help="Seconds to collect heartbeats before listing."
)
@connection_options
def list_agents(as_json: bool, listen: float, nats_config: NatsConfig) -> None:
    """List live agents: owner, instances (live/total), last heartbeat, protocol version."""

    async def action(client: Agents) -> list[AgentInfo]:
        if listen > 0:
            await asyncio.sleep(listen)  # heartbeats arrive on their own schedule; this only collects them
        found = await client.discover()
        for info in found:
            if not any(i.last_heartbeat for i in info.instances):
                await client.status(info)  # not heard yet: one instance answers with a fresh heartbeat
        return found

    found = _run(nats_config, action)
    if as_json:
        click.echo(json.dumps([_as_dict(info) for info in found], indent=2))
        return
    headers = ["agent", "owner", "instances", "last heartbeat", "protocol"]
    click.echo(format_table(headers, [_row(info) for info in found]))


async def _ask_user(query: Query) -> str:
    """A query from the agent: ask on the terminal (stdin) without blocking the stream's loop."""
    return await asyncio.to_thread(click.prompt, click.style(query.prompt, bold=True), err=True)


@agents.command("prompt")
@click.argument("agent")
@click.argument("text")
@click.option("--owner", default=None, help="The agent's owner (when several share its name).")
@click.option("--session", default=None, help="The agent's session.")
@click.option(
    "--attach", "attach", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A file."
)
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True, help="Inactivity timeout (s).")
@connection_options
def prompt_agent(
    agent: str,
    text: str,
    owner: str | None,
    session: str | None,
    attach: tuple[Path, ...],
    timeout_s: float,
    nats_config: NatsConfig,
) -> None:
    """Prompt AGENT with TEXT and print its answer as it streams (status on stderr, dimmed on a terminal)."""
    attachments = [Attachment.from_path(path) for path in attach]
    dim = sys.stderr.isatty()

    async def action(client: Agents) -> None:
        chunks = client.prompt(
            agent,
            text,
            owner=owner,
            session=session,
            attachments=attachments,
            on_query=_ask_user,
            inactivity_timeout_s=timeout_s,
        )
        async for chunk in chunks:
            if isinstance(chunk, Response):
                click.echo(chunk.text, nl=False)
            elif isinstance(chunk, Status):
                click.echo(click.style(chunk.text, dim=True) if dim else f"[{chunk.text}]", err=True)
        click.echo()

    _run(nats_config, action)
