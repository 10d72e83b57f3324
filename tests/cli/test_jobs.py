"""``shipkit jobs`` commands against a real server (click's runner, the same code path as the shell)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog
from click.testing import CliRunner, Result

from shipkit.cli.jobs import jobs
from shipkit.jobs import JobQueue, JobWorker, JobWorkerSpec


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The jobs group configures structlog when nobody has: undo it after each test."""
    yield
    structlog.reset_defaults()


def run(url: str, *args: str) -> Result:
    """Invoke ``shipkit jobs ARGS --nats-url URL``."""
    return CliRunner().invoke(jobs, [*args, "--nats-url", url], catch_exceptions=False)


def test_submit_show_and_ls_round_trip(shipkit_nats_url: str) -> None:
    """submit prints the id; show and ls (table and --json) display the job."""
    submitted = run(shipkit_nats_url, "submit", "trainer", '{"epochs": 3}', "--queued-by", "ops")
    assert submitted.exit_code == 0 and submitted.stdout.strip() == "JOB-001"
    shown = json.loads(run(shipkit_nats_url, "show", "JOB-001", "--json").stdout)
    assert (shown["id"], shown["state"], shown["payload"], shown["queued_by"]) == (
        "JOB-001",
        "queued",
        {"epochs": 3},
        "ops",
    )
    table = run(shipkit_nats_url, "ls").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "WORKER"]
    assert table[1].split()[:3] == ["JOB-001", "queued", "trainer"]
    listed = json.loads(run(shipkit_nats_url, "ls", "--status", "queued", "--json").stdout)
    assert [j["id"] for j in listed] == ["JOB-001"]
    assert json.loads(run(shipkit_nats_url, "ls", "--status", "complete", "--json").stdout) == []
    assert "payload" in run(shipkit_nats_url, "show", "JOB-001").stdout


def test_counts_cancel_and_retry(shipkit_nats_url: str) -> None:
    """cancel ends a queued job, retry requeues it, counts reflects each step."""
    run(shipkit_nats_url, "submit", "w", "1")
    run(shipkit_nats_url, "submit", "w", "2")
    assert run(shipkit_nats_url, "cancel", "JOB-001").stdout.strip() == "JOB-001: cancelled"
    counts = json.loads(run(shipkit_nats_url, "counts", "--json").stdout)
    assert (counts["queued"], counts["cancelled"], counts["total"]) == (1, 1, 2)
    assert run(shipkit_nats_url, "retry", "JOB-001").stdout.strip() == "JOB-001: queued"
    rows = dict(line.split() for line in run(shipkit_nats_url, "counts").stdout.splitlines()[1:])
    assert (rows["queued"], rows["cancelled"], rows["total"]) == ("2", "0", "2")
    assert json.loads(run(shipkit_nats_url, "counts", "--json").stdout)["queued"] == 2


def test_errors_are_clean_messages_with_exit_code_1(shipkit_nats_url: str) -> None:
    """Unknown ids, bad JSON and wrong states fail with a one-line message, not a traceback."""
    missing = CliRunner().invoke(jobs, ["show", "JOB-404", "--nats-url", shipkit_nats_url])
    assert missing.exit_code == 1 and "no job 'JOB-404'" in missing.output
    bad_json = CliRunner().invoke(jobs, ["submit", "w", "{nope", "--nats-url", shipkit_nats_url])
    assert bad_json.exit_code == 2 and "not JSON" in bad_json.output
    run(shipkit_nats_url, "submit", "w", "1")
    wrong = CliRunner().invoke(jobs, ["retry", "JOB-001", "--nats-url", shipkit_nats_url])
    assert wrong.exit_code == 1 and "only failed, dead or cancelled" in wrong.output


def test_unreachable_server_is_reported(shipkit_nats_url: str) -> None:
    """A URL with no server gives a clear connection error."""
    result = CliRunner().invoke(jobs, ["counts", "--nats-url", "nats://127.0.0.1:1"])
    assert result.exit_code == 1 and "could not connect" in result.output


def test_schedules_lists_next_runs(shipkit_nats_url: str) -> None:
    """schedules shows each recurring schedule with its next firing."""

    async def add() -> None:
        async with JobQueue(shipkit_nats_url) as queue:
            await queue.add_schedule("nightly", "0 3 * * *", "reports")

    asyncio.run(add())
    output = run(shipkit_nats_url, "schedules").stdout.splitlines()
    assert output[1].split()[:3] == ["nightly", "0", "3"]
    assert "T03:00:00+00:00" in output[1]


def test_ls_note_of_a_completed_job_leaves_out_earlier_errors() -> None:
    """A job that failed once and then completed shows no stale error in `jobs ls`; a queued retry still does."""
    from shipkit.cli.jobs import _job_row
    from shipkit.jobs.models import Job, JobState

    done = Job(id="JOB-001", worker="w", state=JobState.COMPLETE, attempt=2, last_error="RuntimeError: not yet")
    assert _job_row(done)[-1] == ""
    retrying = done.model_copy(update={"state": JobState.QUEUED})
    assert _job_row(retrying)[-1] == "RuntimeError: not yet"


def test_wait_prints_the_end_state_and_exits_by_it(shipkit_nats_url: str) -> None:
    """wait prints a finished job's result (exit 0), a cancelled one's state (exit 1), and times out cleanly."""

    async def finish() -> None:
        async with JobQueue(shipkit_nats_url) as queue:
            job = await queue.claim("w")
            assert job is not None
            await queue.complete(job.id, {"loss": 0.1})

    run(shipkit_nats_url, "submit", "w", "1", "--priority", "high")
    asyncio.run(finish())
    done = run(shipkit_nats_url, "wait", "JOB-001")
    assert (done.exit_code, done.stdout.strip()) == (0, 'JOB-001: complete {"loss": 0.1}')
    run(shipkit_nats_url, "submit", "w", "2")
    timed_out = CliRunner().invoke(jobs, ["wait", "JOB-002", "--timeout", "0.2", "--nats-url", shipkit_nats_url])
    assert timed_out.exit_code == 1 and "did not finish within 0.2s" in timed_out.output
    run(shipkit_nats_url, "cancel", "JOB-002")
    cancelled = run(shipkit_nats_url, "wait", "JOB-002", "--json")
    assert cancelled.exit_code == 1 and json.loads(cancelled.stdout)["state"] == "cancelled"


def test_purge_and_workers(shipkit_nats_url: str) -> None:
    """purge deletes finished jobs by state and age; workers lists the running workers; bad input is refused."""

    async def with_worker() -> str:
        async def echo(payload: int) -> int:
            return payload

        async with JobQueue(shipkit_nats_url) as queue:
            async with JobWorker(queue, JobWorkerSpec.from_function(echo, worker="echo", concurrency=3)):
                listed = await asyncio.to_thread(run, shipkit_nats_url, "workers")  # the CLI runs its own loop
                args = ["submit", "echo", '"many"', "--nats-url", shipkit_nats_url]
                refused = await asyncio.to_thread(CliRunner().invoke, jobs, args)
                assert refused.exit_code == 1 and "expected integer, got string" in refused.output
            return listed.stdout

    run(shipkit_nats_url, "submit", "w", "1")
    run(shipkit_nats_url, "cancel", "JOB-001")
    assert run(shipkit_nats_url, "purge", "--older-than", "7d").stdout.strip() == "deleted 0 jobs"
    assert run(shipkit_nats_url, "purge", "--state", "cancelled", "--json").stdout.strip() == '{\n  "deleted": 1\n}'
    bad = CliRunner().invoke(jobs, ["purge", "--older-than", "soon", "--nats-url", shipkit_nats_url])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    table = asyncio.run(with_worker()).splitlines()
    assert table[0].split() == ["WORKER", "INSTANCES", "CONCURRENCY", "PRIORITIES", "PAYLOAD"]
    assert table[1].split() == ["echo", "1", "3", "3", "integer"]
