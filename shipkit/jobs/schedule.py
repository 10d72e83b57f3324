"""Recurring schedules: a small cron parser (:class:`CronExpression`) and the stored
:class:`Schedule` description.

Firing is done by the NATS server itself (ADR-51 message schedules, nats-server 2.14+): the
queue stores one ``Nats-Schedule`` message per schedule in its dispatch stream and the server
publishes a firing into the worker's queue at each tick, so no shipkit process has to be up,
elected or awake for a schedule to fire. This module validates expressions up front (with
messages that say what is wrong), converts them to the server's six-field form, and computes
the next firing times shown by ``shipkit jobs schedules``.

Accepted forms:

- five fields ``minute hour day-of-month month day-of-week`` with ``*``, lists (``1,15``),
  ranges (``1-5``), steps (``*/15``, ``10-50/20``), month and weekday names (``jan``, ``mon``),
  weekday ``0``-``7`` (both ``0`` and ``7`` are Sunday); fires at second 0, UTC;
- ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``;
- ``@every <duration>`` with ``s``, ``m``, ``h`` units (``@every 90s``, ``@every 1h30m``).

When both day-of-month and day-of-week are restricted, a day matching either fires (as in cron).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from shipkit.errors import ConfigurationError

__all__ = ["CronExpression", "Schedule"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (  # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _parse_value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{what}: {text!r} is not a number" + (f" or one of {', '.join(names)}" if names else ""))
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what}: {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{what}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start = _parse_value(first, low, high, names, what)
            end = _parse_value(last, low, high, names, what)
            if start > end:
                raise ValueError(f"{what}: range {body!r} runs backwards")
        else:
            start = end = _parse_value(body, low, high, names, what)
            if step_text:
                end = high  # "5/15" means "from 5, every 15"
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A validated schedule expression.

    Attributes:
        text: the expression as given.
        every_s: the interval of an ``@every`` expression, else None.
        minutes / hours / days / months / weekdays: the matching values of a cron expression.
        days_restricted / weekdays_restricted: whether those fields were not ``*``.
    """

    text: str
    every_s: int | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    days_restricted: bool = False
    weekdays_restricted: bool = False
    _fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text``; :class:`ConfigurationError` says which field is wrong and why."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"schedule expression must be a non-empty string, got {text!r}")
        spec = text.strip()
        try:
            if spec.lower().startswith("@every"):
                return cls._parse_every(spec)
            return cls._parse_fields(spec, _MACROS.get(spec.lower(), spec))
        except ValueError as exc:
            raise ConfigurationError(f"invalid schedule {text!r}: {exc}") from None

    @classmethod
    def _parse_every(cls, spec: str) -> CronExpression:
        duration = spec[len("@every") :].strip().lower()
        match = _DURATION_RE.match(duration)
        if not duration or not match:
            raise ValueError("@every needs a duration like 30s, 5m or 1h30m")
        hours, minutes, seconds = (int(g or 0) for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if total < 1:
            raise ValueError("@every needs at least one second")
        return cls(text=spec, every_s=total)

    @classmethod
    def _parse_fields(cls, spec: str, fields_text: str) -> CronExpression:
        fields = fields_text.split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
        parsed = [
            _parse_field(f, lo, hi, names, what) for f, (what, lo, hi, names) in zip(fields, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in parsed[4])
        expression = cls(
            text=spec,
            minutes=parsed[0],
            hours=parsed[1],
            days=parsed[2],
            months=parsed[3],
            weekdays=weekdays,
            days_restricted=fields[2] != "*",
            weekdays_restricted=fields[4] != "*",
            _fields=tuple(fields),
        )
        if expression.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) is None:
            raise ValueError("it never fires (no month has that day)")
        return expression

    def to_nats(self) -> str:
        """The ``Nats-Schedule`` header value (six fields with seconds, or ``@every``)."""
        if self.every_s is not None:
            return f"@every {self.every_s}s"
        weekday_field = ",".join(str(d) for d in sorted(self.weekdays)) if self.weekdays_restricted else "*"
        minute, hour, day, month, _ = self._fields
        return " ".join(["0", minute.lower(), hour, day, month.lower(), weekday_field])

    def _day_matches(self, when: dt.datetime) -> bool:
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, when: dt.datetime) -> dt.datetime | None:
        """The first firing strictly after ``when`` (UTC); None for ``@every`` or if it never fires."""
        if self.every_s is not None:
            return None
        current = when.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = current + dt.timedelta(days=366 * 5)
        while current < limit:
            if current.month not in self.months:
                current = (current.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(current):
                current = current.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0) + dt.timedelta(hours=1)
            elif current.minute not in self.minutes:
                current += dt.timedelta(minutes=1)
            else:
                return current
        return None


class Schedule(BaseModel):
    """A recurring schedule as stored in the queue: every firing submits one job.

    Attributes:
        name: unique per queue; re-adding a name replaces the schedule.
        cron: the expression as given (see the module docstring).
        worker: the worker the jobs are submitted to.
        payload: the payload of every job.
        queued_by: recorded as each job's ``queued_by``.
        max_attempts / timeout_s: per-job policy overrides (None: the worker's).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    cron: str
    worker: str
    payload: Any = None
    queued_by: str = ""
    max_attempts: int | None = None
    timeout_s: float | None = None

    def next_run(self, after: dt.datetime | None = None) -> dt.datetime | None:
        """The next firing after ``after`` (default now), when computable."""
        return CronExpression.parse(self.cron).next_after(after or dt.datetime.now(dt.UTC))
