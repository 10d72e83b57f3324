"""Pure tests of the job records, policies, cron parser, transitions and handler specs (no server)."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest
from pydantic import BaseModel

from shipkit.errors import ConfigurationError, InvalidNameError, SerializationError
from shipkit.jobs import Backoff, CronExpression, Job, JobContext, JobCounts, JobState, JobWorkerSpec
from shipkit.jobs import _transitions as step
from shipkit.jobs._dispatch_stream import at_header
from shipkit.jobs._ids import format_id, id_number
from shipkit.jobs._layout import QueueLayout

SEED_FIELDS = [
    "id",
    "payload",
    "status",
    "worker",
    "queued_by",
    "queued_at",
    "started_at",
    "completed_at",
    "result",
    "error",
]


class Payload(BaseModel):
    """A payload type for spec tests."""

    n: int


def test_job_json_starts_with_the_seed_fields_in_contract_order() -> None:
    """A job's JSON begins with the seed's ten fields in contract order; shipkit's follow."""
    job = Job(id="JOB-001", payload={"a": 1}, worker="w", queued_by="me", queued_at=5)
    keys = list(json.loads(job.to_json()))
    assert keys[:10] == SEED_FIELDS
    assert keys[10:] == ["state", "updated_at"]  # shipkit's other fields are left out at their defaults
    running = job.evolve(state=JobState.RUNNING, attempt=1, max_attempts=3, updated_at=6)
    assert list(json.loads(running.to_json()))[10:] == ["state", "attempt", "max_attempts", "updated_at"]


def test_job_json_leaves_out_defaults_but_keeps_every_set_value() -> None:
    """Past the seed's fields, defaults are left out; falsy values that were set (progress 0, checkpoint 0) stay."""
    job = Job(id="JOB-001", payload=None, worker="w", queued_at=5, updated_at=5)
    data = json.loads(job.to_json())
    assert data == {
        "id": "JOB-001",
        "payload": None,
        "status": "queued",
        "worker": "w",
        "queued_by": "",
        "queued_at": 5,
        "started_at": None,
        "completed_at": None,
        "result": None,
        "error": None,
        "state": "queued",
        "updated_at": 5,
    }
    assert len(job.to_json()) < 250
    changed = job.evolve(progress=0.0, checkpoint=0, attempt=2, priority="high", dispatch=3, cancel_requested=True)
    data = json.loads(changed.to_json())
    assert (data["progress"], data["checkpoint"], data["attempt"], data["priority"]) == (0.0, 0, 2, "high")
    assert (data["dispatch"], data["cancel_requested"]) == (3, True)
    assert Job.from_json(changed.to_json()) == changed


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (JobState.SCHEDULED, "queued"),
        (JobState.QUEUED, "queued"),
        (JobState.RUNNING, "running"),
        (JobState.COMPLETE, "complete"),
        (JobState.FAILED, "failed"),
        (JobState.CANCELLED, "failed"),
        (JobState.DEAD, "failed"),
    ],
)
def test_status_on_the_wire_stays_within_the_seed_vocabulary(state: JobState, status: str) -> None:
    """Every state writes a seed status (queued/running/complete/failed) next to the full state."""
    job = Job(id="JOB-001", worker="w").evolve(state=state)
    raw = json.loads(job.to_json())
    assert raw["status"] == status
    assert raw["state"] == state.value


def test_a_seed_shaped_record_reads_with_its_status_as_state() -> None:
    """A record written by a seed-shaped writer (no ``state``, extra unknown fields) reads correctly."""
    raw = (
        b'{"id":"JOB-007","payload":{"x":1},"status":"running","worker":"gpu","queued_by":"rust",'
        b'"queued_at":1700000000000,"started_at":1700000000100,"completed_at":null,"result":null,'
        b'"error":null,"future_field":true}'
    )
    job = Job.from_json(raw)
    assert job.state is JobState.RUNNING
    assert job.started_at == 1700000000100
    assert job.payload == {"x": 1}


def test_undecodable_job_json_raises_serialization_error_naming_the_field() -> None:
    """A record missing required fields raises SerializationError that names them."""
    with pytest.raises(SerializationError, match="worker"):
        Job.from_json(b'{"id":"JOB-1"}')


def test_ids_are_prefix_dash_three_digits_growing_past_999() -> None:
    """Ids follow the seed format {PREFIX}-{n:03} and sort by number."""
    assert format_id("JOB", 1) == "JOB-001"
    assert format_id("JOB", 1000) == "JOB-1000"
    assert id_number("JOB-1000") > id_number("JOB-999")


def test_layout_validates_names() -> None:
    """A queue name or prefix that cannot appear in NATS names is refused up front."""
    with pytest.raises(InvalidNameError):
        QueueLayout.build("bad.name", "JOB", None)
    with pytest.raises(InvalidNameError):
        QueueLayout.build("jobs", "JOB-X", None)
    layout = QueueLayout.build("jobs", "JOB", None)
    assert layout.dispatch_subject("gpu") == "ship.jobs.jobs.dispatch.gpu"


def test_backoff_grows_exponentially_up_to_the_cap_with_bounded_jitter() -> None:
    """Delays double per failure, stop at max_s, and jitter stays within its fraction."""
    plain = Backoff(initial_s=1, factor=2, max_s=5, jitter=0)
    assert [plain.delay_s(n) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 5, 5]
    jittery = Backoff(initial_s=10, factor=2, max_s=100, jitter=0.2)
    rng = random.Random(7)
    samples = [jittery.delay_s(1, rng) for _ in range(200)]
    assert all(8 <= s <= 12 for s in samples)
    assert len({round(s, 3) for s in samples}) > 50


def test_counts_seed_tuple_folds_states_into_the_seed_four() -> None:
    """``as_seed_tuple`` maps scheduled into queued and cancelled/dead into failed."""
    counts = JobCounts(scheduled=1, queued=2, running=3, complete=4, failed=5, cancelled=6, dead=7)
    assert counts.as_seed_tuple() == (3, 3, 4, 18)
    assert counts.total == 28


# -- cron ---------------------------------------------------------------------------------


def test_cron_fields_support_lists_ranges_steps_and_names() -> None:
    """Five-field expressions parse lists, ranges, steps and names."""
    expr = CronExpression.parse("*/15 9-17 1,15 jan-mar mon-fri")
    assert expr.minutes == frozenset({0, 15, 30, 45})
    assert expr.hours == frozenset(range(9, 18))
    assert expr.days == frozenset({1, 15})
    assert expr.months == frozenset({1, 2, 3})
    assert expr.weekdays == frozenset({1, 2, 3, 4, 5})
    assert expr.to_nats() == "0 */15 9-17 1,15 jan-mar 1,2,3,4,5"


def test_cron_next_after_honours_day_of_month_or_day_of_week() -> None:
    """Next firing times follow cron rules (both day fields restricted: either matches)."""
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)  # a Thursday
    assert CronExpression.parse("30 14 * * *").next_after(start) == dt.datetime(2026, 1, 1, 14, 30, tzinfo=dt.UTC)
    assert CronExpression.parse("0 0 * * 1").next_after(start) == dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert CronExpression.parse("0 0 10 * 5").next_after(start) == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert CronExpression.parse("@monthly").next_after(start) == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert CronExpression.parse("0 0 * * 7").weekdays == frozenset({0})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("* * * * funday", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 31 2 *", "never fires"),
        ("@every 0s", "at least one second"),
        ("@every soon", "duration"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(text: str, fragment: str) -> None:
    """Invalid expressions raise ConfigurationError naming the field and the reason."""
    with pytest.raises(ConfigurationError, match=fragment):
        CronExpression.parse(text)


def test_every_expressions_convert_to_seconds() -> None:
    """``@every 1h30m`` becomes the server's ``@every 5400s``."""
    assert CronExpression.parse("@every 1h30m").to_nats() == "@every 5400s"


def test_at_header_rounds_up_to_the_next_second() -> None:
    """Delayed jobs are scheduled at the next whole second, never early."""
    assert at_header(1_700_000_000_001) == "@at 2023-11-14T22:13:21Z"
    assert at_header(1_700_000_000_000) == "@at 2023-11-14T22:13:20Z"


# -- transitions --------------------------------------------------------------------------


def _queued() -> Job:
    return Job(id="JOB-001", worker="w", queued_at=1)


def test_claim_starts_a_queued_job_and_drops_stale_or_duplicate_messages() -> None:
    """A queued job starts; an old dispatch generation, a finished job or a held job's duplicate is dropped."""
    running = step.claim(
        _queued(), dispatch=1, dispatch_seq=5, redelivered=False, owner="a", default_max_attempts=3, now=10
    )
    assert running is not None and running.state is JobState.RUNNING and running.attempt == 1
    assert running.max_attempts == 3 and running.claimed_by == "a"
    assert (
        step.claim(_queued(), dispatch=2, dispatch_seq=5, redelivered=False, owner="a", default_max_attempts=3, now=10)
        is None
    )
    assert (
        step.claim(running, dispatch=1, dispatch_seq=6, redelivered=False, owner="b", default_max_attempts=3, now=11)
        is None
    )
    done = step.complete(running, result=1, result_ref=None, now=12)
    assert (
        step.claim(done, dispatch=1, dispatch_seq=5, redelivered=True, owner="b", default_max_attempts=3, now=13)
        is None
    )


def test_redelivery_of_a_running_job_takes_it_over_or_ends_it() -> None:
    """A redelivered running job is taken over (attempt + 1), cancelled if asked, or dead when out of attempts."""
    running = step.start(_queued(), owner="a", default_max_attempts=2, now=10)
    taken = step.claim(running, dispatch=1, dispatch_seq=5, redelivered=True, owner="b", default_max_attempts=2, now=20)
    assert taken is not None and taken.attempt == 2 and taken.claimed_by == "b"
    assert taken.last_error is not None and "lease expired" in taken.last_error
    final = step.claim(taken, dispatch=1, dispatch_seq=5, redelivered=True, owner="c", default_max_attempts=2, now=30)
    assert final is not None and final.state is JobState.DEAD
    asked = running.evolve(cancel_requested=True)
    cancelled = step.claim(
        asked, dispatch=1, dispatch_seq=5, redelivered=True, owner="b", default_max_attempts=2, now=20
    )
    assert cancelled is not None and cancelled.state is JobState.CANCELLED


def test_a_claim_whose_write_landed_resumes_instead_of_dropping() -> None:
    """The same owner re-claiming the very message it claimed gets the record back unchanged (a retried claim)."""
    running = step.claim(
        _queued(), dispatch=1, dispatch_seq=9, redelivered=False, owner="a", default_max_attempts=3, now=1
    )
    assert running is not None and running.claimed_from is JobState.QUEUED and running.dispatch_seq == 9
    again = step.claim(running, dispatch=1, dispatch_seq=9, redelivered=False, owner="a", default_max_attempts=3, now=2)
    assert again is running
    other = step.claim(
        running, dispatch=1, dispatch_seq=10, redelivered=False, owner="a", default_max_attempts=3, now=2
    )
    assert other is None


def test_given_back_jobs_do_not_use_up_an_attempt_and_requeue_resets_attempts() -> None:
    """A job given back at shutdown keeps its attempt count; a manual retry starts over with a new dispatch."""
    running = step.start(_queued(), owner="a", default_max_attempts=3, now=10)
    back = step.given_back(running, now=11)
    assert back.state is JobState.QUEUED and back.attempt == 0
    dead = step.dead(running, error="boom", now=12)
    again = step.requeued(dead, now=13)
    assert again.state is JobState.QUEUED and again.attempt == 0 and again.dispatch == 2
    assert again.last_error == "boom" and again.error is None


def test_given_back_jobs_lose_their_stale_progress() -> None:
    """A job given back at shutdown forgets its progress fraction and message: the next attempt starts over."""
    running = step.start(_queued(), owner="a", default_max_attempts=3, now=10)
    reported = step.progressed(running, fraction=0.5, message="halfway", now=11)
    back = step.given_back(reported, now=12)
    assert back.progress is None and back.progress_message is None


# -- specs --------------------------------------------------------------------------------


async def typed_handler(payload: Payload, job: JobContext) -> int:
    """A valid handler: typed payload and a context."""
    return payload.n


async def bare_handler(payload) -> None:  # type: ignore[no-untyped-def]
    """A valid handler with no annotation (any JSON)."""


def test_spec_reads_payload_type_and_context_parameter_from_the_signature() -> None:
    """from_function takes the payload type from the first annotation and finds the JobContext parameter."""
    spec = JobWorkerSpec.from_function(typed_handler, concurrency=2)
    assert spec.worker == "typed_handler"
    assert spec.payload_type is Payload
    assert spec.context_param == "job"
    assert spec.validate_payload({"n": "3"}) == Payload(n=3)
    assert JobWorkerSpec.from_function(bare_handler, worker="w").payload_type is Any


def test_spec_takes_the_context_and_an_extra_parameter_in_any_position() -> None:
    """The JobContext and the caller's extra argument are found wherever they are; the payload is the rest."""
    spec = JobWorkerSpec.from_function(context_first, worker="w")
    assert (spec.payload_param, spec.context_param, spec.payload_type) == ("payload", "job", Payload)

    async def three(ctx: object, n: int, /, job: JobContext) -> tuple[object, int, JobContext]:
        return ctx, n, job

    extra = JobWorkerSpec.from_function(three, worker="w", extra=lambda name, _annotation: name == "ctx")
    assert (extra.extra_param, extra.payload_param, extra.positional) == ("ctx", "n", ("ctx", "n"))


def sync_handler(payload: int) -> int:
    """Not async: refused."""
    return payload


async def extra_param(payload: int, other: str) -> None:
    """A parameter with no default: refused."""


async def two_contexts(job: JobContext, other: JobContext) -> None:
    """Two JobContext parameters: refused."""


async def context_first(job: JobContext, payload: Payload) -> int:
    """The context before the payload: accepted (parameters in any order)."""
    return payload.n + job.attempt


@pytest.mark.parametrize(
    ("func", "options", "fragment"),
    [
        (sync_handler, {}, "async def"),
        (extra_param, {}, "'other' has no default"),
        (two_contexts, {}, "more than one context parameter"),
        (typed_handler, {"retention_s": 0}, "retention_s"),
        (typed_handler, {"priority_levels": 4}, "priority_levels"),
        (typed_handler, {"queue": "bad.queue"}, "queue name"),
        (typed_handler, {"worker": "bad.name"}, "worker name"),
        (typed_handler, {"concurrency": 0}, "concurrency"),
        (typed_handler, {"max_attempts": 0}, "max_attempts"),
        (typed_handler, {"timeout_s": 0}, "timeout_s"),
        (typed_handler, {"lease_s": -1}, "lease_s"),
    ],
)
def test_spec_rejects_bad_handlers_naming_the_function(func: Any, options: dict[str, Any], fragment: str) -> None:
    """Bad handlers or policies raise ConfigurationError with the function's qualified name."""
    with pytest.raises(ConfigurationError, match=fragment) as info:
        JobWorkerSpec.from_function(func, **options)
    assert func.__qualname__ in str(info.value)


def test_spec_reports_unresolvable_type_hints() -> None:
    """A payload annotation that cannot be resolved is a ConfigurationError, not a NameError later."""

    async def local(payload: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        """References a missing name."""

    with pytest.raises(ConfigurationError, match="cannot resolve its type hints"):
        JobWorkerSpec.from_function(local, worker="w")
