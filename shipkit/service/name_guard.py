"""The same-name guard: before a service starts answering, ask discovery who else uses its name.

Two different services under one name split its traffic silently (a queue group does not care
what the members are), so at startup the runtime sends ``$SRV.INFO.{name}`` and gathers the
answers for a short window. An instance with another version or another endpoint set is named
in a warning (``service.name_conflict``), or, with ``strict``, refused with a
:class:`~shipkit.errors.ConfigurationError`. Instances identical to this one (replicas) are fine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

from nats.aio.client import Client
from nats.aio.msg import Msg

from shipkit.errors import ConfigurationError
from shipkit.logging import get_logger
from shipkit.service.discovery import ServiceIdentity
from shipkit.service.endpoint import Endpoint

__all__ = ["NameGuard", "find_namesakes", "guard_name"]

NameGuard = Literal["off", "warn", "strict"]
"""``off``: no check; ``warn``: log a warning per differing instance; ``strict``: refuse to start."""

DEFAULT_WINDOW_S = 0.25
"""How long discovery answers are gathered (scatter-gather has no "last reply" marker)."""

log = get_logger("shipkit.name_guard")


async def find_namesakes(nc: Client, name: str, *, window_s: float = DEFAULT_WINDOW_S) -> list[dict[str, Any]]:
    """The INFO responses of every running instance named ``name`` (answers within ``window_s``)."""
    replies: list[dict[str, Any]] = []

    async def on_reply(msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
        except ValueError:  # not a micro INFO answer: not ours to judge
            return
        if isinstance(body, dict):
            replies.append(body)

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(f"$SRV.INFO.{name}", b"", reply=inbox)
        await asyncio.sleep(window_s)  # the gather window itself, not a synchronisation
    finally:
        await subscription.unsubscribe()
    return replies


def _endpoint_set(endpoints: Sequence[Any]) -> list[str]:
    return sorted(f"{e['name']}={e['subject']}" if isinstance(e, dict) else f"{e.name}={e.subject}" for e in endpoints)


async def guard_name(
    nc: Client,
    identity: ServiceIdentity,
    endpoints: Sequence[Endpoint],
    *,
    strict: bool,
    window_s: float = DEFAULT_WINDOW_S,
) -> None:
    """Warn about (or, ``strict``, refuse) running instances of ``identity.name`` that differ from this one.

    Raises:
        ConfigurationError: ``strict`` and another version or endpoint set answers under the name.
    """
    ours = _endpoint_set(endpoints)
    problems: list[str] = []
    for info in await find_namesakes(nc, identity.name, window_s=window_s):
        theirs = _endpoint_set(info.get("endpoints") or [])
        differences = []
        if info.get("version") != identity.version:
            differences.append(f"version {info.get('version')} (this one: {identity.version})")
        if theirs != ours:
            differences.append(f"endpoints {theirs} (this one: {ours})")
        if not differences:
            continue
        problem = f"instance {info.get('id')} of {identity.name!r} has " + " and ".join(differences)
        problems.append(problem)
        log.warning(
            "service.name_conflict",
            service=identity.name,
            version=identity.version,
            other_instance=info.get("id"),
            other_version=info.get("version"),
            endpoints=ours,
            other_endpoints=theirs,
            hint="both answer requests under this name and split its traffic; rename one, or stop the old one",
        )
    if strict and problems:
        raise ConfigurationError(
            f"another service runs under the name {identity.name!r}: " + "; ".join(problems) + " (--strict-name)"
        )
