"""JobQueue on a real server: the seed's behaviours, the wire shape, and the lifecycle operations."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from jobs_helpers import EventRecorder, wait_state, wait_until
from pydantic import BaseModel

from shipkit.errors import ConfigurationError, KeyNotFoundError, SerializationError
from shipkit.jobs import JobQueue, JobState, JobStateError, JobWorker, JobWorkerSpec
from shipkit.models import ShipEvent

SEED_FIELDS = ["id", "payload", "status", "worker", "queued_by", "queued_at", "started_at", "completed_at"]


class Training(BaseModel):
    """A typed payload."""

    epochs: int
    model: str = "tiny"


async def test_ids_count_up_from_one_in_seed_format(queue: JobQueue[Any]) -> None:
    """Submits get JOB-001, JOB-002, ... in order, and get() returns the queued record."""
    ids = [await queue.submit({"n": i}, "gpu", "planner") for i in range(3)]
    assert ids == ["JOB-001", "JOB-002", "JOB-003"]
    job = await queue.get("JOB-002")
    assert job is not None
    assert (job.state, job.status, job.payload, job.worker, job.queued_by) == (
        JobState.QUEUED,
        "queued",
        {"n": 1},
        "gpu",
        "planner",
    )
    assert job.started_at is None and job.completed_at is None and job.result is None


async def test_ids_stay_unique_across_two_queue_instances(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """Two processes' queues share one id counter: interleaved submits never collide."""
    async with JobQueue(shipkit_nats_url) as other:
        ids = [await (queue if i % 2 else other).submit(i, "w") for i in range(10)]
    assert sorted(ids) == [f"JOB-{n:03}" for n in range(1, 11)]


async def test_claim_filters_by_worker_and_takes_the_oldest_first(queue: JobQueue[Any]) -> None:
    """claim(worker) returns only that worker's jobs, oldest first, and None when none is left."""
    await queue.submit("a1", "alpha")
    await queue.submit("b1", "beta")
    await queue.submit("a2", "alpha")
    first = await queue.claim("alpha")
    second = await queue.claim("alpha")
    assert first is not None and second is not None
    assert (first.id, first.payload, second.id) == ("JOB-001", "a1", "JOB-003")
    assert first.state is JobState.RUNNING and first.started_at is not None and first.attempt == 1
    assert await queue.claim("alpha") is None
    beta = await queue.claim("beta")
    assert beta is not None and beta.id == "JOB-002"


async def test_complete_and_fail_only_from_running(queue: JobQueue[Any]) -> None:
    """complete/fail of a queued or finished job raise JobStateError; from running they finish it."""
    done_id = await queue.submit(1, "w")
    fail_id = await queue.submit(2, "w")
    with pytest.raises(JobStateError, match="not running"):
        await queue.complete(done_id, "early")
    await queue.claim("w")
    await queue.claim("w")
    done = await queue.complete(done_id, {"ok": True})
    failed = await queue.fail(fail_id, "compilation error")
    assert (done.state, done.result, done.completed_at is not None) == (JobState.COMPLETE, {"ok": True}, True)
    assert (failed.state, failed.status, failed.error) == (JobState.FAILED, "failed", "compilation error")
    with pytest.raises(JobStateError):
        await queue.complete(done_id, "again")
    with pytest.raises(JobStateError):
        await queue.fail(fail_id, "again")


async def test_complete_from_another_process_without_the_lease(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """Any process can complete a running job; the holder's message is then dropped as stale."""
    job_id = await queue.submit(1, "w")
    await queue.claim("w")
    async with JobQueue(shipkit_nats_url) as other:
        job = await other.complete(job_id, "from elsewhere")
        assert job.state is JobState.COMPLETE
    assert (await queue.counts()).complete == 1


async def test_counts_and_list_follow_the_lifecycle(queue: JobQueue[Any]) -> None:
    """counts() and list(status) agree with the jobs' states through submit, claim, complete, fail."""
    for i in range(4):
        await queue.submit(i, "w")
    a = await queue.claim("w")
    b = await queue.claim("w")
    c = await queue.claim("w")
    assert a and b and c
    await queue.complete(a.id, None)
    await queue.fail(b.id, "x")
    counts = await queue.counts()
    assert (counts.queued, counts.running, counts.complete, counts.failed) == (1, 1, 1, 1)
    assert counts.as_seed_tuple() == (1, 1, 1, 1)
    assert [j.id for j in await queue.list()] == ["JOB-001", "JOB-002", "JOB-003", "JOB-004"]
    assert [j.id for j in await queue.list("running")] == [c.id]
    assert [j.id for j in await queue.list(JobState.QUEUED, worker="w")] == ["JOB-004"]
    assert await queue.list(worker="nobody") == []


async def test_counts_come_from_counters_not_a_scan(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """Deleting every record behind the queue's back leaves counts() unchanged; recount() repairs it."""
    for i in range(5):
        await queue.submit(i, "w")
    nc = await nats.connect(shipkit_nats_url)
    try:
        await nc.jetstream().purge_stream("KV_JOBS_jobs", subject="$KV.JOBS_jobs.job.>")
    finally:
        await nc.close()
    assert (await queue.counts()).queued == 5  # a scan would now find nothing
    repaired = await queue.recount()
    assert repaired.queued == 0
    assert (await queue.counts()).queued == 0


async def test_get_of_an_unknown_job_is_none_and_actions_raise_key_not_found(queue: JobQueue[Any]) -> None:
    """get() of a missing id is None; cancel/retry/complete of one raise KeyNotFoundError."""
    assert await queue.get("JOB-999") is None
    for action in (queue.cancel, queue.retry):
        with pytest.raises(KeyNotFoundError, match="JOB-999"):
            await action("JOB-999")


async def test_records_on_the_wire_keep_seed_fields_in_order(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """A raw client reading the KV record sees the seed fields first, in order, with seed types."""
    job_id = await queue.submit({"epochs": 3}, "gpu", "planner")
    nc = await nats.connect(shipkit_nats_url)
    try:
        entry = await (await nc.jetstream().key_value("JOBS_jobs")).get(f"job.{job_id}")
    finally:
        await nc.close()
    raw = json.loads(entry.value)
    assert list(raw)[: len(SEED_FIELDS)] == SEED_FIELDS
    assert list(raw)[8:10] == ["result", "error"]
    assert raw["status"] == "queued" and isinstance(raw["queued_at"], int)
    assert raw["started_at"] is None and raw["result"] is None and raw["error"] is None


async def test_a_seed_shaped_record_written_by_a_peer_is_read(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """A record in the seed's exact shape (no shipkit fields), written by a raw client, reads correctly."""
    seed = (
        b'{"id":"JOB-900","payload":{"epochs":3},"status":"failed","worker":"gpu","queued_by":"rust-agent",'
        b'"queued_at":1700000000000,"started_at":1700000000500,"completed_at":1700000009000,"result":null,'
        b'"error":"compilation error"}'
    )
    nc = await nats.connect(shipkit_nats_url)
    try:
        await nc.jetstream().publish("$KV.JOBS_jobs.job.JOB-900", seed)
    finally:
        await nc.close()
    job = await queue.get("JOB-900")
    assert job is not None
    assert (job.state, job.status, job.error, job.queued_by) == (
        JobState.FAILED,
        "failed",
        "compilation error",
        "rust-agent",
    )
    assert (await queue.retry("JOB-900")).state is JobState.QUEUED


async def test_typed_queue_validates_and_serialises_payloads(shipkit_nats_url: str) -> None:
    """A queue with payload_type refuses a bad payload at submit and stores models as JSON."""
    async with JobQueue[Training](shipkit_nats_url, payload_type=Training) as typed:
        job_id = await typed.submit(Training(epochs=2), "gpu")
        with pytest.raises(SerializationError, match="payload"):
            await typed.submit({"epochs": "many"}, "gpu")  # type: ignore[arg-type]
        job = await typed.get(job_id)
    assert job is not None and job.payload == {"epochs": 2, "model": "tiny"}


async def test_transitions_publish_ship_events(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """submit/claim/complete publish job.queued/job.running/job.complete ShipEvents on ship.events.job.*."""
    async with EventRecorder(shipkit_nats_url) as events:
        job_id = await queue.submit({"x": 1}, "w", "me")
        await queue.claim("w")
        await queue.complete(job_id, 1)
        await events.wait("job.complete", job_id)
    assert [e["event_type"] for e in events.events] == ["job.queued", "job.running", "job.complete"]
    subject, raw = events.raw[0]
    assert subject == "ship.events.job.queued"
    assert list(json.loads(raw)) == ["event_type", "timestamp", "source", "payload", "correlation_id", "version"]
    event = ShipEvent.from_json(raw)
    assert event.source == "tests" and event.payload["id"] == job_id and event.payload["state"] == "queued"


async def test_events_are_stored_in_the_event_bus_stream(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """Job events are durable: they land in SHIP_EVENTS for late subscribers."""
    await queue.submit(1, "w")
    nc = await nats.connect(shipkit_nats_url)
    try:
        msg = await nc.jetstream().get_last_msg("SHIP_EVENTS", "ship.events.job.queued")
    finally:
        await nc.close()
    assert json.loads(msg.data)["event_type"] == "job.queued"


async def test_queues_sharing_the_event_stream_lose_no_event(shipkit_nats_url: str) -> None:
    """Two queues number their jobs and record revisions alike; every transition of both is stored.

    Their events share one stream and its duplicate window: ids derived from job id and revision
    alone made the second queue's ``JOB-001`` events duplicates of the first's, silently dropped.
    """
    async with JobQueue(shipkit_nats_url, name="left") as left, JobQueue(shipkit_nats_url, name="right") as right:
        for queue in (left, right):
            job_id = await queue.submit({"q": queue.name}, "w")
            assert job_id == "JOB-001"
            await queue.claim("w")
            await queue.complete(job_id, queue.name)
            await queue.flush()
        nc = await nats.connect(shipkit_nats_url)
        try:
            info = await nc.jetstream().stream_info("SHIP_EVENTS")
        finally:
            await nc.close()
    assert info.state.messages == 6  # queued, running, complete for each queue


async def test_idempotent_submit_returns_the_first_id_and_queues_once(queue: JobQueue[Any]) -> None:
    """A submit repeated with the same idempotency key returns the same id and creates no second job."""
    first = await queue.submit({"a": 1}, "w", idempotency_key="order-42")
    again = await queue.submit({"a": 1}, "w", idempotency_key="order-42")
    other = await queue.submit({"a": 1}, "w", idempotency_key="order-43")
    assert first == again != other
    assert (await queue.counts()).queued == 2
    claimed = [await queue.claim("w"), await queue.claim("w"), await queue.claim("w")]
    assert [j.id if j else None for j in claimed] == [first, other, None]


async def test_idempotency_survives_the_duplicate_window(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """The key is kept in KV: a new queue instance (no shared memory) still de-duplicates."""
    first = await queue.submit(1, "w", idempotency_key="k")
    await queue.claim("w")
    await queue.complete(first, "done")
    async with JobQueue(shipkit_nats_url) as other:
        assert await other.submit(1, "w", idempotency_key="k") == first
    assert (await queue.counts()).total == 1


async def test_delayed_job_is_scheduled_then_runs_no_earlier_than_run_at(queue: JobQueue[Any]) -> None:
    """A job with delay_s is 'scheduled', not claimable before run_at, and claimable after it."""
    job_id = await queue.submit("later", "w", delay_s=0.3)
    job = await queue.get(job_id)
    assert job is not None and job.state is JobState.SCHEDULED and job.run_at is not None
    assert await queue.claim("w") is None
    claimed = await wait_until(lambda: queue.claim("w"), timeout=5)
    assert claimed.id == job_id
    assert claimed.started_at is not None and claimed.started_at >= job.run_at
    assert (await queue.counts()).scheduled == 0


async def test_run_at_in_the_past_queues_at_once(queue: JobQueue[Any]) -> None:
    """run_at earlier than now is an ordinary queued job."""
    job_id = await queue.submit(1, "w", run_at=datetime.now(UTC) - timedelta(seconds=5))
    claimed = await queue.claim("w")
    assert claimed is not None and claimed.id == job_id


async def test_bad_submit_options_are_refused(queue: JobQueue[Any]) -> None:
    """Both delay_s and run_at, a naive datetime, max_attempts < 1 or a bad worker name are refused."""
    with pytest.raises(ConfigurationError):
        await queue.submit(1, "w", delay_s=1, run_at=1.0)
    with pytest.raises(ConfigurationError, match="timezone"):
        await queue.submit(1, "w", run_at=datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError):
        await queue.submit(1, "w", max_attempts=0)
    with pytest.raises(ConfigurationError):
        await queue.submit(1, "a.b")
    with pytest.raises(SerializationError):
        await queue.submit(object(), "w")


async def test_cancel_queued_and_scheduled_jobs_at_once(queue: JobQueue[Any]) -> None:
    """Cancelling a queued or scheduled job ends it at once and it is never claimed."""
    queued = await queue.submit(1, "w")
    scheduled = await queue.submit(2, "w", delay_s=0.5)
    kept = await queue.submit(3, "w")
    assert (await queue.cancel(queued)).state is JobState.CANCELLED
    assert (await queue.cancel(scheduled)).state is JobState.CANCELLED
    claimed = await queue.claim("w")
    assert claimed is not None and claimed.id == kept
    assert await queue.claim("w") is None
    counts = await queue.counts()
    assert (counts.cancelled, counts.scheduled, counts.queued, counts.running) == (2, 0, 0, 1)
    with pytest.raises(JobStateError, match="already finished"):
        await queue.cancel(queued)


async def test_cancel_running_job_whose_holder_died_ends_at_lease_expiry(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """A running job whose holder is gone is cancelled when its lease expires and the message comes back."""
    job_id = await queue.submit(1, "w")
    holder: JobQueue[Any] = JobQueue(shipkit_nats_url)
    await holder.connect()
    assert await holder.claim("w", lease_s=1) is not None
    requested = await queue.cancel(job_id)
    assert requested.state is JobState.RUNNING and requested.cancel_requested
    await holder.connection.close()  # the holder dies: no more lease renewals

    async def cancelled_after_redelivery() -> bool:
        assert await queue.claim("w", lease_s=1) is None
        job = await queue.get(job_id)
        return job is not None and job.state is JobState.CANCELLED

    await wait_until(cancelled_after_redelivery, timeout=6)
    await holder.close()


async def test_retry_requeues_failed_and_dead_jobs_with_fresh_attempts(queue: JobQueue[Any]) -> None:
    """retry() puts a failed job back in the queue (attempts reset, last error kept) and it runs again."""
    job_id = await queue.submit({"p": 1}, "w")
    await queue.claim("w")
    await queue.fail(job_id, "flaky")
    requeued = await queue.retry(job_id)
    assert (requeued.state, requeued.attempt, requeued.last_error, requeued.error) == (
        JobState.QUEUED,
        0,
        "flaky",
        None,
    )
    again = await queue.claim("w")
    assert again is not None and again.id == job_id and again.payload == {"p": 1} and again.attempt == 1
    with pytest.raises(JobStateError, match="only failed, dead or cancelled"):
        await queue.retry(job_id)


async def test_fail_with_retry_uses_the_policy_until_dead(queue: JobQueue[Any]) -> None:
    """fail(retry=True) requeues while attempts remain, then the job is dead with its last error."""
    job_id = await queue.submit(1, "w", max_attempts=2)
    await queue.claim("w")
    retried = await queue.fail(job_id, "first", retry=True)
    assert retried.state is JobState.QUEUED
    await wait_until(lambda: queue.claim("w"), timeout=5)
    dead = await queue.fail(job_id, "second", retry=True)
    assert (dead.state, dead.error, dead.last_error, dead.attempt) == (JobState.DEAD, "second", "second", 2)


async def test_release_gives_a_claimed_job_back_without_using_an_attempt(queue: JobQueue[Any]) -> None:
    """release() returns a held job to the queue at once; the next claim is attempt 1 again."""
    job_id = await queue.submit(1, "w")
    await queue.claim("w")
    released = await queue.release(job_id)
    assert released.state is JobState.QUEUED and released.attempt == 0
    again = await queue.claim("w")
    assert again is not None and again.id == job_id and again.attempt == 1
    with pytest.raises(JobStateError, match="not held"):
        await queue.release("JOB-999")


async def test_large_results_go_to_the_object_store(shipkit_nats_url: str) -> None:
    """A result over the inline limit is stored as an object; the record holds a reference; result() reads it."""
    async with JobQueue(shipkit_nats_url, result_inline_max_bytes=1024) as small:
        job_id = await small.submit(1, "w")
        await small.claim("w")
        big = {"blob": "x" * 5000}
        job = await small.complete(job_id, big)
        assert job.result is None and job.result_ref is not None and job.result_ref.size > 5000
        assert await small.result(job_id) == big
        other = await small.submit(2, "w")
        await small.claim("w")
        await small.complete(other, [1, 2])
        assert (await small.get(other)).result == [1, 2]  # type: ignore[union-attr]
        assert await small.result(other) == [1, 2]


async def test_submit_many_reserves_a_contiguous_block_of_ids(queue: JobQueue[Any]) -> None:
    """submit_many queues every payload with consecutive ids in one reservation."""
    await queue.submit(0, "w")
    ids = await queue.submit_many(range(5), "w", "bulk")
    assert ids == [f"JOB-{n:03}" for n in range(2, 7)]
    assert (await queue.counts()).queued == 6
    job = await queue.get(ids[-1])
    assert job is not None and job.payload == 4 and job.queued_by == "bulk"


async def test_schedules_are_stored_listed_and_removed(queue: JobQueue[Any]) -> None:
    """add_schedule validates and stores a schedule; schedules() lists it; remove_schedule deletes it."""
    with pytest.raises(ConfigurationError, match="invalid schedule"):
        await queue.add_schedule("nightly", "0 25 * * *", "w")
    await queue.add_schedule("nightly", "0 3 * * *", "reports", {"kind": "daily"})
    await queue.add_schedule("nightly", "30 3 * * *", "reports", {"kind": "daily"})  # replaces
    found = await queue.schedules()
    assert [(s.name, s.cron, s.worker, s.payload) for s in found] == [
        ("nightly", "30 3 * * *", "reports", {"kind": "daily"})
    ]
    next_run = found[0].next_run()
    assert next_run is not None and (next_run.hour, next_run.minute) == (3, 30)
    assert await queue.remove_schedule("nightly") is True
    assert await queue.remove_schedule("nightly") is False
    assert await queue.schedules() == []


async def test_a_schedule_fires_jobs_without_any_process_driving_it(queue: JobQueue[Any]) -> None:
    """An '@every 1s' schedule makes the server dispatch firings; each becomes one job with the schedule's name."""
    await queue.add_schedule("tick", "@every 1s", "ticker", {"t": 1}, queued_by="cron")
    first = await wait_until(lambda: queue.claim("ticker"), timeout=5)
    second = await wait_until(lambda: queue.claim("ticker"), timeout=5)
    await queue.remove_schedule("tick")
    assert first.id != second.id
    assert (first.schedule, first.payload, first.queued_by) == ("tick", {"t": 1}, "cron")
    await wait_state(queue, first.id, JobState.RUNNING)


async def test_delete_removes_one_finished_job_and_keeps_counts_exact(queue: JobQueue[Any]) -> None:
    """delete() removes a finished job (counts drop by one), refuses an unfinished one and an unknown id."""
    done = await queue.submit({"n": 1}, "w")
    claimed = await queue.claim("w")
    assert claimed is not None
    await queue.complete(claimed.id, {"ok": True})
    waiting = await queue.submit({"n": 2}, "w")
    assert (await queue.counts()).complete == 1
    assert await queue.delete(done) is True
    assert await queue.get(done) is None
    assert (await queue.counts()).complete == 0
    with pytest.raises(JobStateError, match="only finished jobs"):
        await queue.delete(waiting)
    with pytest.raises(KeyNotFoundError, match="no job"):
        await queue.delete("JOB-999")


async def test_job_queued_events_carry_the_attempts_the_job_will_get(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """job.queued says how many attempts a job gets: its own, the advertised worker's, else the queue's."""
    release = asyncio.Event()

    async def train(payload: dict[str, Any]) -> None:
        await release.wait()

    worker = JobWorker(queue, JobWorkerSpec.from_function(train, worker="trainer", max_attempts=5))
    async with EventRecorder(shipkit_nats_url) as events:
        await worker.start()
        try:
            served = await queue.submit({"n": 1}, "trainer")
            unserved = await queue.submit({"n": 2}, "nobody")
            own = await queue.submit({"n": 3}, "nobody", max_attempts=7)
            await events.wait("job.queued", own)
        finally:
            release.set()
            await worker.stop(5)
    by_id = {e["payload"]["id"]: e["payload"]["max_attempts"] for e in events.of("job.queued")}
    assert by_id[served] == 5
    assert by_id[unserved] == queue.max_attempts == 3
    assert by_id[own] == 7
