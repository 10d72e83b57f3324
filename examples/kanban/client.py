"""Call a running kanban service from the command line.

Start the service first (``shipkit run examples.kanban.app:service``), then::

    python -m examples.kanban.client                    # a short tour of every command
    python -m examples.kanban.client create "Write the docs" [todo|doing|done]
    python -m examples.kanban.client move 1 doing
    python -m examples.kanban.client get 1
    python -m examples.kanban.client list [todo|doing|done]
    python -m examples.kanban.client audit

The server is ``--nats-url``, else ``$SHIPKIT_NATS_URL`` / ``$NATS_URL``, else localhost:4222.
Error replies arrive as :class:`~shipkit.ServiceError` with the code the service chose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from shipkit import Client, NatsConnectionError, NatsTimeoutError, ServiceError
from shipkit.models import new_correlation_id

Printer = Callable[[str], None]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def call(client: Client, command: str, payload: Any = None, *, out: Printer = print) -> Any:
    """Send one command to ``kanban.{command}``, print request and reply, return the reply (None on error)."""
    correlation_id = new_correlation_id()
    body = "" if payload is None else f" {_compact(payload)}"
    out(f"> kanban.{command}{body}   (correlation_id={correlation_id})")
    try:
        reply = await client.request(f"kanban.{command}", payload, correlation_id=correlation_id)
    except ServiceError as exc:
        out(f"< error {exc.code}: {exc.message}")
        return None
    out(f"< {_compact(reply)}")
    return reply


async def tour(client: Client, *, out: Printer = print) -> None:
    """Create three cards, move two, read one back, list a column, then two requests that fail."""
    first = await call(client, "create", {"title": "Write the README"}, out=out)
    second = await call(client, "create", {"title": "Record the demo"}, out=out)
    await call(client, "create", {"title": "Ship 1.0", "column": "todo"}, out=out)
    await call(client, "move", {"id": first["id"], "column": "doing"}, out=out)
    await call(client, "move", {"id": second["id"], "column": "done"}, out=out)
    await call(client, "get", {"id": first["id"]}, out=out)
    await call(client, "list", {"column": "todo"}, out=out)
    await call(client, "get", {"id": 999}, out=out)  # 404: no such card
    await call(client, "create", {"title": ""}, out=out)  # 400: the field error comes back


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.kanban.client", description=__doc__.split("\n")[0])
    parser.add_argument("--nats-url", default=None, help="NATS server URL (default: environment, else localhost)")
    commands = parser.add_subparsers(dest="command")
    create = commands.add_parser("create", help="add a card")
    create.add_argument("title")
    create.add_argument("column", nargs="?", default="todo")
    move = commands.add_parser("move", help="move a card to a column")
    move.add_argument("id", type=int)
    move.add_argument("column")
    get = commands.add_parser("get", help="show a card")
    get.add_argument("id", type=int)
    listing = commands.add_parser("list", help="list cards, optionally of one column")
    listing.add_argument("column", nargs="?", default=None)
    commands.add_parser("audit", help="show the audit trail")
    return parser


def _payload(args: argparse.Namespace) -> Any:
    if args.command == "create":
        return {"title": args.title, "column": args.column}
    if args.command == "move":
        return {"id": args.id, "column": args.column}
    if args.command == "get":
        return {"id": args.id}
    if args.command == "list":
        return {"column": args.column} if args.column else None
    return None


async def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 for an error reply or no service)."""
    args = _parser().parse_args(argv)
    hint = "start it with `shipkit run examples.kanban.app:service`"
    try:
        async with Client(args.nats_url, timeout_s=5) as client:
            if args.command is None:
                await tour(client)
                return 0
            reply = await call(client, args.command, _payload(args))
            return 0 if reply is not None else 1  # every kanban command replies with a value
    except NatsConnectionError as exc:
        print(f"cannot reach NATS ({exc}); {hint}", file=sys.stderr)
    except NatsTimeoutError:
        print(f"no kanban service answered; {hint}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
