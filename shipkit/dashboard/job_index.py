"""Every job of one queue as a small summary in memory, paged and filtered here: :class:`JobIndex`.

The index is fed by a :class:`~shipkit.dashboard._wire.KvMirror` over the queue's record
bucket: the current records arrive once when the dashboard starts, then each change as it
happens. A page of the list is then a filter over memory — a refresh never asks the server
for records, and a list of 10 000 jobs costs the server nothing per view. Only the summary is
kept (payload and errors shortened); the job page reads the full record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shipkit.jobs._ids import id_number
from shipkit.jobs.models import JobState
from shipkit.logging import get_logger

log = get_logger(__name__)

PREVIEW_CHARS = 160
MAX_PAGE = 200
STATES = tuple(state.value for state in JobState)


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """The fields the list shows (unknown fields such as ``priority`` kept when present)."""
    state = record.get("state") or record.get("status") or "queued"
    summary = {
        "id": str(record.get("id", "")),
        "state": state,
        "worker": str(record.get("worker", "")),
        "queued_by": str(record.get("queued_by", "")),
        "queued_at": record.get("queued_at"),
        "started_at": record.get("started_at"),
        "completed_at": record.get("completed_at"),
        "updated_at": record.get("updated_at"),
        "attempt": record.get("attempt", 0),
        "max_attempts": record.get("max_attempts"),
        "progress": record.get("progress"),
        "progress_message": record.get("progress_message"),
        "cancel_requested": bool(record.get("cancel_requested")),
        "claimed_by": record.get("claimed_by"),
        "priority": record.get("priority"),
        "error": _preview(record.get("error") or record.get("last_error") or ""),
        "payload": _preview(record.get("payload")),
    }
    summary["_text"] = " ".join(
        str(summary[k] or "") for k in ("id", "worker", "queued_by", "progress_message", "error", "payload")
    ).lower()
    return summary


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the list shows: jobs in ``state`` for ``worker`` whose text contains ``text``."""

    state: str | None = None
    worker: str | None = None
    text: str | None = None

    def matches(self, summary: dict[str, Any]) -> bool:
        """True when the job passes every given filter."""
        if self.state and summary["state"] != self.state:
            return False
        if self.worker and summary["worker"] != self.worker:
            return False
        return not self.text or self.text.lower() in summary["_text"]


class JobIndex:
    """Summaries of one queue's jobs, newest first; :attr:`version` changes on every change."""

    def __init__(self, queue: str, record_prefix: str) -> None:
        self.queue = queue
        self._record_prefix = record_prefix  # "$KV.JOBS_x.job."
        self._jobs: dict[str, dict[str, Any]] = {}
        self._order: list[str] | None = None
        self.version = 0
        self.loaded = False

    def __len__(self) -> int:
        return len(self._jobs)

    def apply(self, subject: str, data: bytes | None) -> None:
        """Fold one record change from the mirror in (``data`` None: the record was deleted)."""
        job_id = subject.removeprefix(self._record_prefix)
        self.version += 1
        if data is None:
            if self._jobs.pop(job_id, None) is not None:
                self._order = None
            return
        try:
            record = json.loads(data)
        except ValueError:
            log.warning("dashboard.job_undecodable", queue=self.queue, job_id=job_id, size=len(data))
            return
        if not isinstance(record, dict):
            log.warning("dashboard.job_undecodable", queue=self.queue, job_id=job_id, size=len(data))
            return
        if job_id not in self._jobs:
            self._order = None
        self._jobs[job_id] = summarise(record)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's summary, or None."""
        return self._jobs.get(job_id)

    def workers(self) -> list[str]:
        """Every worker name the queue's jobs target."""
        return sorted({job["worker"] for job in self._jobs.values()})

    def page(self, wanted: JobFilter, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """One page of the matching jobs, newest first, and how many match in all."""
        if self._order is None:
            self._order = sorted(self._jobs, key=lambda job_id: (id_number(job_id), job_id), reverse=True)
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        matching = 0
        items: list[dict[str, Any]] = []
        for job_id in self._order:
            job = self._jobs[job_id]
            if wanted.matches(job):
                if offset <= matching < offset + limit:
                    items.append({k: v for k, v in job.items() if k != "_text"})
                matching += 1
        return {"queue": self.queue, "total": matching, "offset": offset, "limit": limit, "items": items}
