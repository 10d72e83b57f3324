"""The payload of every ``job.*`` event, typed: :class:`JobEvent`.

Annotate an event consumer's parameter with it instead of reading ``event.payload.get("id")``::

    @service.on_event("job.*")
    async def on_job(event: JobEvent, ctx: Context) -> None:
        if event.state is JobState.COMPLETE:
            result = await ctx.jobs(event.queue).result(event.id)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from shipkit.jobs.models import JobState, ResultRef

__all__ = ["JobEvent"]


class JobEvent(BaseModel):
    """What a ``job.*`` ``ShipEvent`` carries as its payload.

    Attributes:
        id: the job id.
        queue: the queue's name.
        worker: the worker name the job is for.
        state: the state the transition led to (``job.progress`` and ``job.running``: running).
        attempt: the attempt the transition belongs to (0 before the first run).
        max_attempts: attempts allowed (None until a worker applied its policy).
        progress / message: on ``job.progress``: the fraction and its message.
        error: on ``job.failed``, ``job.retrying``, ``job.dead``: why.
        delay_s: on ``job.retrying``: seconds until the next attempt.
        result_ref: on ``job.complete`` of a large result: where it is stored.
        queued_by: on ``job.queued``: the submitter.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    queue: str
    worker: str
    state: JobState
    attempt: int = 0
    max_attempts: int | None = None
    progress: float | None = None
    message: str | None = None
    error: str | None = None
    delay_s: float | None = None
    result_ref: ResultRef | None = None
    queued_by: str | None = None

    @property
    def is_finished(self) -> bool:
        """True when the job reached a final state with this event."""
        return self.state.is_finished

    def __getitem__(self, key: str) -> Any:
        """``event["id"]``: reads like the untyped payload it replaces."""
        return getattr(self, key)
