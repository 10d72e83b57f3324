"""An agent that shows up in the being registry, heartbeats, reports its work, and follows ship_config.

Run it from the repository root::

    shipkit run examples.agent.app:service

- At startup its lifespan registers being ``scout`` in the ``beings_status`` bucket (state
  ``idle``) and starts a heartbeat task; at shutdown it cancels the task and marks ``scout``
  ``offline`` (the entry then expires with the bucket's 300 s TTL).
- ``scout.survey`` does some work: the status is ``working`` with ``current_task`` set while
  it runs, ``idle`` again after.
- The heartbeat interval is the ship-wide setting ``heartbeat.interval_s`` in ``ship_config``
  (30 s when unset). A ``kv_watch`` applies changes while the agent runs::

      nats kv put ship_config heartbeat.interval_s 5     # every 5 s from now on
      nats kv del ship_config heartbeat.interval_s       # back to the default
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field, PositiveFloat, TypeAdapter, ValidationError

from shipkit import BeingStatus, Context, Service, ShipkitError
from shipkit.primitives.beings import BeingRegistry
from shipkit.primitives.kv import KvEntry
from shipkit.primitives.ship_config import SHIP_CONFIG_BUCKET, ShipConfig

BEING_ID = "scout"
CAPABILITIES = ["survey"]
HEARTBEAT_KEY = "heartbeat.interval_s"
"""The ``ship_config`` key holding the heartbeat interval in seconds."""
DEFAULT_HEARTBEAT_S = 30.0

IntervalSetting = PositiveFloat | None
"""A valid ``heartbeat.interval_s`` value; ``None`` when the key is unset or deleted."""


class Presence:
    """This agent's entry in the being registry and the heartbeat task that keeps it fresh."""

    def __init__(self, being_id: str, capabilities: list[str]) -> None:
        self.being_id = being_id
        self.capabilities = capabilities
        self.interval_s = DEFAULT_HEARTBEAT_S
        self.heartbeats = 0
        self._registry: BeingRegistry | None = None
        self._task: asyncio.Task[None] | None = None
        self._interval_changed = asyncio.Event()
        self._log: Any = None

    @property
    def registry(self) -> BeingRegistry:
        """The registry connection (set while the agent runs)."""
        if self._registry is None:
            raise RuntimeError(f"{self.being_id} is not running")
        return self._registry

    async def start(self, ctx: Context, interval_s: float | None) -> None:
        """Register (state ``idle``) and start heartbeating every ``interval_s`` (or the default)."""
        self._registry = await BeingRegistry(ctx.connection).connect()
        self._log = ctx.log.bind(being_id=self.being_id)
        self.interval_s = interval_s or DEFAULT_HEARTBEAT_S
        self.heartbeats = 0
        self._interval_changed = asyncio.Event()  # created in the running loop
        await self.registry.register(self.being_id, capabilities=self.capabilities)
        self._task = asyncio.create_task(self._heartbeat_loop(), name=f"{self.being_id}-heartbeat")
        self._log.info("agent.registered", heartbeat_interval_s=self.interval_s)

    async def stop(self) -> None:
        """Cancel the heartbeat task, then mark this being ``offline``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.registry.update_status(self.being_id, "offline")
        self._log.info("agent.offline", heartbeats=self.heartbeats)

    def set_interval(self, interval_s: float | None) -> None:
        """Use a new heartbeat interval (``None``: the default); the loop picks it up at once."""
        new = interval_s or DEFAULT_HEARTBEAT_S
        if new != self.interval_s:
            self.interval_s = new
            self._interval_changed.set()
            if self._log is not None:
                self._log.info("agent.heartbeat_interval", heartbeat_interval_s=new)

    @contextlib.asynccontextmanager
    async def working_on(self, task_id: str) -> AsyncIterator[None]:
        """Show ``working`` on ``task_id`` in the registry for the duration of the block."""
        await self.registry.update_status(self.being_id, "working", current_task=task_id)
        try:
            yield
        finally:
            await self.registry.update_status(self.being_id, "idle")

    async def _heartbeat_loop(self) -> None:
        while True:
            self._interval_changed.clear()
            with contextlib.suppress(TimeoutError):  # a change of interval ends the wait early
                await asyncio.wait_for(self._interval_changed.wait(), self.interval_s)
            try:
                await self.registry.heartbeat(self.being_id)
                self.heartbeats += 1
            except ShipkitError as exc:  # one missed beat is not fatal; the next one may succeed
                self._log.warning("agent.heartbeat_failed", error=str(exc))


presence = Presence(BEING_ID, CAPABILITIES)


def parse_interval(value: Any) -> float | None:
    """A ``heartbeat.interval_s`` value as seconds, or None when it is missing or not a positive number."""
    try:
        return TypeAdapter(IntervalSetting).validate_python(value)
    except ValidationError:
        return None


@contextlib.asynccontextmanager
async def lifespan(ctx: Context) -> AsyncIterator[None]:
    """Appear in the being registry for as long as the service runs."""
    config = await ShipConfig(ctx.connection).connect()
    await presence.start(ctx, parse_interval(await config.get(HEARTBEAT_KEY)))
    try:
        yield
    finally:
        await presence.stop()


service = Service(
    "scout",
    version="1.0.0",
    description="An agent in the being registry that surveys text",
    lifespan=lifespan,
)


# -- reacting to ship_config ----------------------------------------------------------------------


@service.kv_watch(SHIP_CONFIG_BUCKET, key=HEARTBEAT_KEY)  # the contract's bucket: history 5, no TTL
async def on_heartbeat_interval(interval_s: IntervalSetting) -> None:
    """Apply ``heartbeat.interval_s``; a delete (None) restores the default.

    Values that are not a positive number never get here: the runtime logs them
    (``kv_watch.invalid_value``) and keeps the current interval.
    """
    presence.set_interval(interval_s)


@service.kv_watch(SHIP_CONFIG_BUCKET)
async def on_config(entry: KvEntry, ctx: Context) -> None:
    """Log every ship-wide setting as it is seen: current values first, then changes."""
    ctx.log.info("config.seen", key=entry.key, operation=entry.operation, revision=entry.revision)


# -- work -----------------------------------------------------------------------------------------


class Survey(BaseModel):
    """``scout.survey``: a text to survey."""

    task_id: str = Field(min_length=1, max_length=64)
    text: str


class SurveyReport(BaseModel):
    """What the survey found."""

    task_id: str
    words: int
    top_words: list[str]


@service.handler("survey", max_concurrency=1)  # one task at a time: the registry shows which
async def survey(task: Survey, ctx: Context) -> SurveyReport:
    """Count the words of a text; the being status says ``working`` meanwhile."""
    async with presence.working_on(task.task_id):
        words = [word.strip(".,;:!?\"'()").lower() for word in task.text.split()]
        counts = Counter(word for word in words if word)
        ctx.log.info("survey.done", task_id=task.task_id, words=len(words))
        return SurveyReport(
            task_id=task.task_id, words=len(words), top_words=[word for word, _ in counts.most_common(3)]
        )


@service.handler("status")
async def status() -> dict[str, Any]:
    """This agent's registry entry and its current heartbeat interval."""
    being: BeingStatus | None = await presence.registry.get_status(BEING_ID)
    return {
        "being": being.model_dump(mode="json") if being else None,
        "heartbeat_interval_s": presence.interval_s,
        "heartbeats": presence.heartbeats,
    }
