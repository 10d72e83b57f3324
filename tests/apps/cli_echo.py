"""A service for the ``shipkit run`` tests: an echo, and a handler that stays in flight on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg

from shipkit import Context, Service

service = Service("clitest", description="shipkit run tests")

PROBE = "clitest.probe"
"""``hold`` announces itself on ``{PROBE}.started`` and returns after a message on ``{PROBE}.release``."""


@service.handler("echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Answer with the request."""
    return payload


@service.handler("hold")
async def hold(ctx: Context) -> dict[str, str]:
    """Stay in flight until the test releases it (60 s at most), so a signal can arrive meanwhile."""
    nc = ctx.connection.client
    released = asyncio.Event()

    async def on_release(msg: Msg) -> None:
        released.set()

    subscription = await nc.subscribe(f"{PROBE}.release", cb=on_release)
    try:
        await nc.publish(f"{PROBE}.started", b"")  # after the SUB on the same connection: no lost release
        await asyncio.wait_for(released.wait(), 60)
    finally:
        await subscription.unsubscribe()
    return {"status": "released"}
