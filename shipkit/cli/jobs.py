"""``shipkit jobs``: inspect and drive a job queue from the shell.

A thin skin over :class:`~shipkit.jobs.queue.JobQueue`: every command parses its arguments,
calls one queue method and prints a table (or JSON with ``--json``)::

    shipkit jobs submit trainer '{"epochs": 3}'
    shipkit jobs ls --status queued
    shipkit jobs show JOB-001
    shipkit jobs cancel JOB-001
    shipkit jobs retry JOB-001
    shipkit jobs counts --json
    shipkit jobs wait JOB-001 --timeout 600
    shipkit jobs purge --state complete --older-than 7d
    shipkit jobs workers
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from shipkit.cli._common import quiet_library_logs
from shipkit.cli._connection_options import connection_options
from shipkit.config import NatsConfig
from shipkit.errors import ShipkitError
from shipkit.jobs.models import FINISHED_STATES, PRIORITIES, Job, JobState, Priority, WorkerInfo
from shipkit.jobs.queue import JobQueue

__all__ = ["jobs"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _common(func: F) -> F:
    """The options every command takes: how to connect, where the queue is and how to print."""
    options = [
        connection_options,
        click.option("--queue", "queue_name", default="jobs", show_default=True, help="Job queue name."),
        click.option("--prefix", default="JOB", show_default=True, help="Job id prefix (for submit)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(nats_config: NatsConfig, queue_name: str, prefix: str, action: Callable[[JobQueue[Any]], Awaitable[T]]) -> T:
    """Open the queue, run ``action``, close it; shipkit errors become a clean CLI error."""

    async def main() -> T:
        name = nats_config.name or "shipkit-jobs-cli"
        config = nats_config.model_copy(update={"name": name, "max_reconnect_attempts": 0})
        queue: JobQueue[Any] = JobQueue(config, name=queue_name, prefix=prefix)
        async with queue:
            return await action(queue)

    try:
        return asyncio.run(main())
    except ShipkitError as exc:
        raise click.ClickException(str(exc)) from exc


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _short(value: Any, limit: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _job_row(job: Job) -> list[str]:
    # An earlier attempt's error is no news on a job that finally completed.
    earlier = job.last_error if job.state is not JobState.COMPLETE else None
    note = job.error or earlier or (f"{job.progress:.0%} {job.progress_message or ''}" if job.progress else "")
    return [
        job.id,
        job.state.value,
        job.worker,
        f"{job.attempt}/{job.max_attempts or '-'}",
        job.queued_by or "-",
        _when(job.queued_at),
        _short(note.strip()) if note else "",
    ]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group("jobs")
def jobs() -> None:
    """Inspect and drive shipkit job queues (durable jobs on NATS JetStream)."""
    quiet_library_logs()  # keep stdout for the output: warnings only, on stderr


@jobs.command("ls")
@click.option("--status", type=click.Choice([s.value for s in JobState]), default=None, help="Only jobs in this state.")
@click.option("--worker", default=None, help="Only jobs for this worker.")
@click.option("--limit", type=int, default=None, help="Show at most this many (the newest).")
@_common
def list_jobs(
    status: str | None,
    worker: str | None,
    limit: int | None,
    nats_config: NatsConfig,
    queue_name: str,
    prefix: str,
    as_json: bool,
) -> None:
    """List jobs, oldest first."""
    found = _run(nats_config, queue_name, prefix, lambda q: q.list(status, worker=worker))
    if limit is not None:
        found = found[-limit:] if limit > 0 else []
    if as_json:
        _echo_json([job.model_dump(mode="json") for job in found])
        return
    headers = ["id", "state", "worker", "attempt", "queued by", "queued at", "note"]
    click.echo(_table(headers, [_job_row(job) for job in found]))


@jobs.command("show")
@click.argument("job_id")
@_common
def show(job_id: str, nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool) -> None:
    """Show one job in full."""
    job = _run(nats_config, queue_name, prefix, lambda q: q.get(job_id))
    if job is None:
        raise click.ClickException(f"no job {job_id!r} in queue {queue_name!r}")
    record = job.model_dump(mode="json")
    if as_json:
        _echo_json(record)
        return
    for key, value in record.items():
        if key.endswith("_at") and isinstance(value, int):
            value = f"{_when(value)} ({value})"
        elif not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        click.echo(f"{key:>17}: {value}")


@jobs.command("submit")
@click.argument("worker")
@click.argument("payload")
@click.option("--queued-by", default="cli", show_default=True, help="Recorded as the submitter.")
@click.option("--delay", "delay_s", type=float, default=None, help="Run no earlier than this many seconds from now.")
@click.option("--idempotency-key", default=None, help="Submit at most once per key.")
@click.option("--max-attempts", type=int, default=None, help="Attempts for this job.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True, help="Job priority.")
@_common
def submit(
    worker: str,
    payload: str,
    queued_by: str,
    delay_s: float | None,
    idempotency_key: str | None,
    max_attempts: int | None,
    nats_config: NatsConfig,
    priority: Priority,
    queue_name: str,
    prefix: str,
    as_json: bool,
) -> None:
    """Queue a job for WORKER with the JSON PAYLOAD; print its id."""
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from exc
    job_id = _run(
        nats_config,
        queue_name,
        prefix,
        lambda q: q.submit(
            value,
            worker,
            queued_by,
            delay_s=delay_s,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            priority=priority,
        ),
    )
    if as_json:
        _echo_json({"id": job_id})
    else:
        click.echo(job_id)


@jobs.command("wait")
@click.argument("job_id")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Give up after this many seconds.")
@_common
def wait(
    job_id: str, timeout_s: float | None, nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool
) -> None:
    """Wait until a job finishes; print its end state and result. Exit 0 when complete, 1 otherwise."""
    job = _run(nats_config, queue_name, prefix, lambda q: q.wait(job_id, timeout_s=timeout_s))
    if as_json:
        _echo_json(job.model_dump(mode="json"))
    elif job.state is JobState.COMPLETE:
        result = "(stored in the object store)" if job.result_ref is not None else json.dumps(job.result)
        click.echo(f"{job.id}: complete {result}")
    else:
        click.echo(f"{job.id}: {job.state.value} {job.error or ''}".rstrip())
    if job.state is not JobState.COMPLETE:
        sys.exit(1)


def _action_command(name: str, verb: str, doc: str) -> None:
    @jobs.command(name, help=doc)
    @click.argument("job_id")
    @_common
    def command(job_id: str, nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool) -> None:
        job = _run(nats_config, queue_name, prefix, lambda q: getattr(q, verb)(job_id))
        if as_json:
            _echo_json(job.model_dump(mode="json"))
        elif job.state is JobState.RUNNING and job.cancel_requested:
            click.echo(f"{job.id}: cancellation requested (the worker stops it)")
        else:
            click.echo(f"{job.id}: {job.state.value}")


_action_command("cancel", "cancel", "Cancel a job (a running one is asked to stop).")
_action_command("retry", "retry", "Requeue a failed, dead or cancelled job.")


@jobs.command("counts")
@_common
def counts(nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool) -> None:
    """Jobs per state."""
    result = _run(nats_config, queue_name, prefix, lambda q: q.counts())
    if as_json:
        _echo_json({**result.as_dict(), "total": result.total})
        return
    rows = [[state, str(value)] for state, value in result.as_dict().items()]
    rows.append(["total", str(result.total)])
    click.echo(_table(["state", "jobs"], rows))


@jobs.command("schedules")
@_common
def schedules(nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool) -> None:
    """Recurring schedules and their next firing."""
    found = _run(nats_config, queue_name, prefix, lambda q: q.schedules())
    if as_json:
        _echo_json([s.model_dump(mode="json") for s in found])
        return
    rows = []
    for item in found:
        upcoming = item.next_run()
        rows.append([item.name, item.cron, item.worker, upcoming.isoformat() if upcoming else "-"])
    click.echo(_table(["name", "cron", "worker", "next run"], rows))


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _UNITS_S else text
    try:
        value = float(number)
    except ValueError:
        hint = f"{text!r} is not a duration like 90s, 15m, 12h or 7d"
        raise click.BadParameter(hint, param_hint="--older-than") from None
    if value < 0:
        raise click.BadParameter(f"{text!r} is negative", param_hint="--older-than")
    return value * _UNITS_S.get(unit, 1)


@jobs.command("purge")
@click.option("--state", type=click.Choice([s.value for s in FINISHED_STATES]), default=None, help="Only this state.")
@click.option("--older-than", "older_than", default=None, help="Only jobs that ended before this long ago (7d, 12h).")
@click.option("--worker", default=None, help="Only jobs for this worker.")
@_common
def purge(
    state: str | None,
    older_than: str | None,
    worker: str | None,
    nats_config: NatsConfig,
    queue_name: str,
    prefix: str,
    as_json: bool,
) -> None:
    """Delete finished jobs (complete, failed, dead, cancelled) with their results; print how many."""
    older_than_s = _duration_s(older_than) if older_than is not None else None
    deleted = _run(
        nats_config, queue_name, prefix, lambda q: q.purge(state=state, older_than_s=older_than_s, worker=worker)
    )
    if as_json:
        _echo_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} job{'s' if deleted != 1 else ''}")


@jobs.command("workers")
@_common
def workers(nats_config: NatsConfig, queue_name: str, prefix: str, as_json: bool) -> None:
    """Running job workers: name, instances, concurrency, priority levels."""
    found = _run(nats_config, queue_name, prefix, lambda q: q.workers())
    if as_json:
        _echo_json([info.model_dump(mode="json") for info in found])
        return
    by_name: dict[str, list[WorkerInfo]] = {}
    for info in found:
        by_name.setdefault(info.worker, []).append(info)
    rows = [
        [name, str(len(infos)), str(sum(i.concurrency for i in infos)), str(infos[0].priority_levels), _schema(infos)]
        for name, infos in sorted(by_name.items())
    ]
    click.echo(_table(["worker", "instances", "concurrency", "priorities", "payload"], rows))


def _schema(infos: list[WorkerInfo]) -> str:
    schema = infos[0].payload_schema
    return _short(schema.get("title") or schema.get("type") or "any JSON")
