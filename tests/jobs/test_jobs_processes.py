"""Jobs across worker processes on a real server: racing workers, a killed worker, a restarted server."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from jobs_helpers import WorkerProcess, wait_state, wait_until

from shipkit.jobs import JobQueue, JobState
from shipkit.server import NatsServer


async def _all_complete(queue: JobQueue[Any], total: int) -> bool:
    return (await queue.counts()).complete == total


async def _stuck_report(queue: JobQueue[Any], worker: WorkerProcess, worker_name: str) -> str:
    """What is not complete, what the dispatch consumer holds, and what the worker process said."""
    jobs = await queue.list()
    stuck = [j for j in jobs if j.state is not JobState.COMPLETE]
    lines = [f"{len(stuck)} of {len(jobs)} jobs not complete; counts {await queue.counts()}"]
    lines += [
        f"  {j.id} state={j.state.value} attempt={j.attempt} claimed_by={j.claimed_by} "
        f"dispatch={j.dispatch} dispatch_seq={j.dispatch_seq} updated_at={j.updated_at} last_error={j.last_error}"
        for j in stuck[:20]
    ]
    try:
        info = await queue.connection.jetstream.consumer_info(
            queue.layout.dispatch_stream, queue.layout.consumer_name(worker_name)
        )
        lines.append(
            f"consumer: num_pending={info.num_pending} num_ack_pending={info.num_ack_pending} "
            f"num_redelivered={info.num_redelivered} num_waiting={info.num_waiting} delivered={info.delivered} "
            f"ack_floor={info.ack_floor}"
        )
    except Exception as exc:  # diagnostics only: report, do not mask the timeout
        lines.append(f"consumer info failed: {exc!r}")
    lines.append(f"worker stdout tail: {worker.lines[-10:]}")
    lines.append("worker stderr tail:\n" + worker.stderr_tail())
    return "\n".join(lines)


async def test_two_worker_processes_complete_each_of_1000_jobs_exactly_once(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """Two processes racing over 1 000 jobs: every job runs once, completes once, and is recorded once."""
    workers = [WorkerProcess(shipkit_nats_url, "racer", concurrency=16) for _ in range(2)]
    await asyncio.gather(*(w.start() for w in workers))
    try:
        ids = await queue.submit_many(range(1000), "racer")
        await wait_until(lambda: _all_complete(queue, 1000), timeout=60, interval=0.1)
    finally:
        await asyncio.gather(*(w.terminate() for w in workers))
    runs = collections.Counter(job_id for w in workers for job_id in w.words("DONE"))
    assert set(runs) == set(ids) and set(runs.values()) == {1}
    assert all(w.words("DONE") for w in workers), "both processes took a share"
    jobs = await queue.list()
    assert len(jobs) == 1000
    assert {(j.state, j.attempt) for j in jobs} == {(JobState.COMPLETE, 1)}
    assert sorted(j.result["echo"] for j in jobs) == list(range(1000))
    counts = await queue.counts()
    assert (counts.complete, counts.running, counts.queued) == (1000, 0, 0)


async def test_a_killed_worker_s_job_is_redelivered_after_its_lease_and_completes(
    queue: JobQueue[Any], shipkit_nats_url: str
) -> None:
    """SIGKILL a worker mid-job: after the 2 s lease another worker takes the job over and completes it."""
    doomed = await WorkerProcess(shipkit_nats_url, "fragile", mode="block", lease_s=2).start()
    job_id = await queue.submit({"x": 1}, "fragile")
    await doomed.wait_line("START")
    await doomed.kill()
    running = await queue.get(job_id)
    assert running is not None and running.state is JobState.RUNNING and running.attempt == 1
    rescuer = await WorkerProcess(shipkit_nats_url, "fragile", lease_s=2).start()
    try:
        job = await wait_state(queue, job_id, JobState.COMPLETE, timeout=10)
    finally:
        await rescuer.terminate()
    assert job.attempt == 2 and job.result == {"echo": {"x": 1}, "attempt": 2}
    assert job.last_error is not None and "lease expired" in job.last_error
    assert rescuer.words("DONE") == [job_id]


async def test_server_restart_mid_run_loses_nothing(
    queue: JobQueue[Any], shipkit_server: NatsServer, shipkit_nats_url: str
) -> None:
    """Restart the server while a worker process is busy: every job still completes, exactly once recorded."""
    worker = await WorkerProcess(
        shipkit_nats_url, "steady", mode="sleep", sleep_s=0.01, concurrency=4, lease_s=3
    ).start()
    try:
        ids = await queue.submit_many(range(200), "steady")
        await worker.wait_line("DONE", count=40, timeout=20)
        await asyncio.to_thread(shipkit_server.restart)
        try:
            await wait_until(lambda: _all_complete(queue, 200), timeout=45, interval=0.2)
        except TimeoutError:
            raise AssertionError(await _stuck_report(queue, worker, "steady")) from None
    finally:
        await worker.terminate()
    jobs = await queue.list()
    assert [j.id for j in jobs] == ids
    assert {j.state for j in jobs} == {JobState.COMPLETE}
    assert set(worker.words("DONE")) == set(ids)
    counts = await queue.counts()
    assert (counts.complete, counts.queued, counts.running) == (200, 0, 0)


async def test_graceful_sigterm_gives_running_jobs_back(queue: JobQueue[Any], shipkit_nats_url: str) -> None:
    """SIGTERM a worker holding a job past its grace: the job returns to queued at once (not after the lease)."""
    stuck = await WorkerProcess(shipkit_nats_url, "polite", mode="block", lease_s=30, grace_s=0.2).start()
    job_id = await queue.submit(1, "polite")
    await stuck.wait_line("START")
    code = await stuck.terminate()
    assert code == 0
    job = await queue.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempt == 0
    claimed = await queue.claim("polite")
    assert claimed is not None and claimed.id == job_id
