"""The runner that executes a :class:`~shipkit.jobs.worker_spec.JobWorkerSpec`: :class:`JobWorker`.

Integration contract (what ``@service.job_worker`` relies on):

- ``JobWorker(queue, spec)`` does nothing until ``await start()``; the queue must be usable
  (``start`` connects it if needed).
- It never holds more jobs than ``spec.concurrency``: a slot is taken when a message is pulled
  and freed when that job is settled.
- Each job: payload validated (a mismatch makes the job ``dead`` at once: retrying cannot fix
  it), handler run as its own task under ``timeout_s``, lease renewed in the background; the
  return value completes the job; an exception or a timeout fails the attempt (retried with
  backoff until ``max_attempts``, then ``dead``); a cancellation request cancels the task and
  the job ends ``cancelled``.
- ``await stop(graceful_timeout_s)`` stops pulling at once, lets running jobs finish within the
  grace period, then cancels the rest and gives them back to the queue immediately (``nak``)
  with the interrupted attempt *not* counted. A job whose give-back cannot be written (the
  server is unreachable) is redelivered when its lease expires: never lost, never left
  ``running``. Returns the :class:`JobWorkerStats`.
"""

from __future__ import annotations

import asyncio
import enum
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from nats.aio.msg import Msg
from pydantic import ValidationError

from shipkit import _tracing
from shipkit._failover import first_then_retry
from shipkit.errors import LeaseLostError, SerializationError, ShipkitError
from shipkit.jobs._lease import Lease
from shipkit.jobs._pull import Puller
from shipkit.jobs._registry import info_for
from shipkit.jobs._retry import TRANSIENT_ERRORS
from shipkit.jobs.context import JobContext
from shipkit.jobs.models import now_ms, served_priorities
from shipkit.jobs.queue import JobQueue
from shipkit.jobs.worker_spec import JobWorkerSpec
from shipkit.logging import get_logger

__all__ = ["JobWorker", "JobWorkerStats"]

log = get_logger(__name__)

_CANCEL_WAIT_S = 5.0  # how long a cancelled handler may take to unwind before we settle anyway


@dataclass(frozen=True, slots=True)
class JobWorkerStats:
    """What one :class:`JobWorker` did.

    Attributes:
        handled: jobs completed.
        failed: attempts that failed (errors, timeouts, bad payloads).
        cancelled: jobs cancelled while running here.
        given_back: jobs returned to the queue at shutdown.
        lost: jobs whose lease was taken over by another worker.
    """

    handled: int = 0
    failed: int = 0
    cancelled: int = 0
    given_back: int = 0
    lost: int = 0


class _Ending(enum.Enum):
    """How an attempt ended, and so what its settlement writes."""

    COMPLETE = "complete"  # the handler returned: the result is recorded
    FAIL = "fail"  # it raised or timed out: retried with backoff, or dead when attempts ran out
    DEAD = "dead"  # retrying cannot help (the payload does not validate)
    CANCELLED = "cancelled"  # an operator cancelled it
    SHUTDOWN = "shutdown"  # the worker stopped: given back, the attempt not counted
    LOST = "lost"  # another worker took it over: nothing is written


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How an attempt ended; ``now`` (and a retry's ``delay_s``) are fixed once so a retried
    settlement writes exactly the same record."""

    kind: _Ending
    value: Any = None
    now: int = field(default_factory=now_ms)
    delay_s: float | None = None
    error: BaseException | None = None  # the handler's exception, for the traceback in the log


class JobWorker:
    """Runs ``spec``'s handler on jobs for ``spec.worker``, ``spec.concurrency`` at a time.

    Args:
        queue: the queue to take jobs from.
        spec: the handler and its policies.
        pull_expires_s: how long an idle pull request waits on the server.
        extra: makes the argument for the spec's ``extra_param`` from each job's context (the
            service passes one building its ``Context``).
    """

    def __init__(
        self,
        queue: JobQueue[Any],
        spec: JobWorkerSpec,
        *,
        pull_expires_s: float = 5.0,
        extra: Callable[[JobContext], Any] | None = None,
    ) -> None:
        self.queue = queue
        self.spec = spec
        self._extra = extra
        self._engine = queue.engine  # what this worker runs on; it touches nothing else of the queue
        self._pull_expires_s = pull_expires_s
        self._puller: Puller | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: dict[str, Lease] = {}
        self._counts = dict.fromkeys(JobWorkerStats.__slots__, 0)
        self._stopping = False
        self._tracer: Any = None
        self._interrupt = asyncio.Event()
        self._max_attempts = spec.max_attempts or queue.max_attempts
        self._backoff = spec.backoff or queue.backoff

    @property
    def stats(self) -> JobWorkerStats:
        """Counters so far."""
        return JobWorkerStats(**self._counts)

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._leases)

    async def start(self) -> None:
        """Begin taking jobs (connects the queue if needed)."""
        if self._puller is not None:
            return
        await self.queue.connect()
        self._tracer = _tracing.tracer()  # decided once per start: attempts are traced or not
        consumers = [
            await self._engine.dispatch.ensure_consumer(self.spec.worker, self.spec.lease_s, priority)
            for priority in served_priorities(self.spec.priority_levels)
        ]
        self._stopping = False
        self._puller = Puller(
            self.queue.connection,
            self.queue.layout.dispatch_stream,
            consumers,
            self.spec.concurrency,
            self._on_message,
            expires_s=self._pull_expires_s,
        )
        self._puller.start()
        await self._engine.start_expiry()  # every worker process helps delete expired jobs of its queue
        await self._engine.registry.advertise(
            info_for(self.spec, self.queue.name, self._engine.instance_id, self._max_attempts)
        )
        log.info(
            "job.worker_started", worker=self.spec.worker, concurrency=self.spec.concurrency, queue=self.queue.name
        )

    async def stop(self, graceful_timeout_s: float = 30.0) -> JobWorkerStats:
        """Stop taking jobs, let running ones finish within the grace, give the rest back."""
        puller, self._puller = self._puller, None
        if puller is None:
            return self.stats
        self._stopping = True
        await puller.stop()
        try:
            await self._engine.registry.withdraw(self.spec.worker, self._engine.instance_id)
        except ShipkitError as exc:  # the entry expires with the registry's TTL anyway
            log.warning("job.registry_withdraw_failed", worker=self.spec.worker, error=str(exc))
        if self._tasks and graceful_timeout_s > 0 and not self._interrupt.is_set():
            await self._wait_or_interrupt(graceful_timeout_s)
        if self._leases:
            log.warning("job.worker_interrupting", worker=self.spec.worker, jobs=sorted(self._leases))
            for lease in list(self._leases.values()):
                lease.signal("shutdown")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_CANCEL_WAIT_S + self.spec.lease_s)
            for task in pending:  # settling hangs (no server): the lease expiry returns the job
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._interrupt.clear()
        if self.queue.connection.is_connected:
            try:
                await self.queue.flush()  # counters and events of the last jobs, before the caller disconnects
            except ShipkitError as exc:
                log.warning("job.flush_failed", worker=self.spec.worker, error=str(exc))
        stats = self.stats
        log.info(
            "job.worker_stopped", worker=self.spec.worker, **{k: getattr(stats, k) for k in JobWorkerStats.__slots__}
        )
        return stats

    async def _wait_or_interrupt(self, timeout_s: float) -> None:
        """Wait until no job runs here, ``timeout_s`` passes, or :meth:`interrupt` is called."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interrupted = asyncio.ensure_future(self._interrupt.wait())
        try:
            while self._tasks and not interrupted.done() and (remaining := deadline - loop.time()) > 0:
                await asyncio.wait({*self._tasks, interrupted}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()

    @property
    def in_flight(self) -> int:
        """Jobs claimed or running here now (what a shutdown waits for)."""
        return len(self._tasks)

    def interrupt(self) -> None:
        """Cut a :meth:`stop` in progress short: give running jobs back now (a forced shutdown).

        Called before :meth:`stop`, the next stop skips its grace period.
        """
        self._interrupt.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- per job ---------------------------------------------------------------------------

    def _on_message(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg), name=f"shipkit-job-{self.spec.worker}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            lease = await self._claim(msg)
            if lease is not None:
                lease.retention_s = self.spec.retention_s
                self._leases[lease.job.id] = lease
                try:
                    if self._tracer is None:
                        await self._attempt(lease)
                    else:
                        await _tracing.run_in_span(
                            self._tracer,
                            self.queue.layout.dispatch_subject(self.spec.worker),
                            lease.job.trace_context,
                            {"shipkit.job.id": lease.job.id, "shipkit.job.attempt": lease.job.attempt},
                            lambda: self._attempt(lease),
                        )
                finally:
                    self._leases.pop(lease.job.id, None)
                    # Settled leases are gone already. One left here was not settled (its write got
                    # no answer in time, or failed): stop renewing it, so the server redelivers the
                    # message after the lease and the job is resumed or retried, never left running.
                    self._engine.leases.discard(lease)
                    self._engine.holder.forget(lease)
        except ShipkitError as exc:  # unsettled: the message comes back after its lease
            log.error("job.claim_failed", worker=self.spec.worker, subject=msg.subject, error=str(exc))
        except Exception:  # a bug: log it, the message comes back after its lease
            log.exception("job.handle_crashed", worker=self.spec.worker, subject=msg.subject)
        finally:
            if self._puller is not None:
                self._puller.release()

    async def _attempt(self, lease: Lease) -> None:
        """Run one attempt and write its outcome (the body of the attempt's span when tracing)."""
        outcome = await self._run(lease)
        if self._tracer is not None:
            failed = outcome.kind in (_Ending.FAIL, _Ending.DEAD)
            _tracing.annotate({"shipkit.job.outcome": outcome.kind.value}, error=str(outcome.value) if failed else None)
        await self._settle(lease, outcome)

    async def _claim(self, msg: Msg) -> Lease | None:
        """Claim, retrying while the server is briefly unreachable (a landed claim resumes)."""
        holder, lease_s = self._engine.holder, self.spec.lease_s

        def attempt() -> Awaitable[Lease | None]:
            return holder.claim(msg, lease_s=lease_s, default_max_attempts=self._max_attempts)

        return await first_then_retry(f"claim {msg.subject}", attempt, lease_s / 2, transient=TRANSIENT_ERRORS)

    async def _run(self, lease: Lease) -> _Outcome:
        """Validate the payload and run the handler under the timeout; say how it ended."""
        try:
            payload = self.spec.validate_payload(lease.job.payload)
        except ValidationError as exc:
            return _Outcome(
                _Ending.DEAD, f"payload does not match {_type_name(self.spec.payload_type)}: {_summary(exc)}"
            )
        if self._stopping:
            return _Outcome(_Ending.SHUTDOWN)
        try:
            resume_from = await self._engine.holder.resume_state(lease.job)
        except ShipkitError as exc:  # a checkpoint object that cannot be read: this attempt cannot resume
            return _Outcome(_Ending.FAIL, f"cannot read the checkpoint: {exc}")
        context = JobContext(self._engine.holder, lease, resume_from)
        extra = self._extra(context) if self._extra is not None and self.spec.extra_param is not None else None

        async def call() -> Any:
            return await self.spec.invoke(payload, context, extra)

        task = asyncio.create_task(call(), name=f"shipkit-job-{lease.job.id}")

        def cancel_task(reason: str) -> None:
            task.cancel()

        lease.on_cancel = cancel_task
        if lease.cancel_reason is not None or lease.job.cancel_requested:
            task.cancel()
        timeout_s = lease.job.timeout_s or self.spec.timeout_s
        if timeout_s is None:
            await _finished(task)
            return _outcome_of(task, lease)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            lease.signal("timeout")
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
            return _Outcome(_Ending.FAIL, f"timed out after {timeout_s:g}s")
        return _outcome_of(task, lease)

    async def _settle(self, lease: Lease, outcome: _Outcome) -> None:
        """Write the outcome, retrying while the server is unreachable.

        Retried for one lease plus one request timeout, so a write whose answer was lost to a
        server restart is tried again at least once (the lease is renewed meanwhile). A write
        that never gets through is left to the lease: ``_handle`` stops renewing it and the
        server redelivers the message.
        """
        if outcome.kind is _Ending.FAIL and outcome.delay_s is None:
            outcome = replace(outcome, delay_s=self._backoff.delay_s(lease.job.attempt))
        deadline_s = self.spec.lease_s + self.queue.connection.config.request_timeout_s
        try:
            await first_then_retry(
                f"settle {lease.job.id}", lambda: self._apply(lease, outcome), deadline_s, transient=TRANSIENT_ERRORS
            )
        except LeaseLostError:
            self._counts["lost"] += 1
            log.warning("job.lease_lost", job_id=lease.job.id, attempt=lease.attempt, outcome=outcome.kind.value)
        except TRANSIENT_ERRORS as exc:
            log.error(
                "job.settle_failed",
                job_id=lease.job.id,
                outcome=outcome.kind.value,
                error=str(exc),
                hint="the job is redelivered when its lease expires",
            )

    async def _apply(self, lease: Lease, outcome: _Outcome) -> None:
        holder, kind, now = self._engine.holder, outcome.kind, outcome.now
        fields = self._fields(lease)  # before the write: a give-back rewinds the record's attempt
        if kind is _Ending.COMPLETE:
            try:
                await holder.complete(lease, outcome.value, now=now)
                self._counts["handled"] += 1
                log.info("job.complete", **fields)
                return
            except SerializationError as exc:
                outcome = _Outcome(_Ending.FAIL, f"result is not JSON-serialisable: {exc}", now, outcome.delay_s)
                kind = _Ending.FAIL
        if kind is _Ending.FAIL:
            delay_s = outcome.delay_s if outcome.delay_s is not None else self._backoff.delay_s(lease.job.attempt)
            short = short_traceback(outcome.error) if outcome.error is not None else None
            job = await holder.fail(lease, str(outcome.value), self._backoff, now=now, delay_s=delay_s, traceback=short)
            self._counts["failed"] += 1
            # One level scheme: an attempt that will be retried is a warning; a final one an error.
            final = job.is_finished
            (log.error if final else log.warning)(
                "job.dead" if final else "job.attempt_failed",
                **fields,
                state=job.state.value,
                error=outcome.value,
                exc_info=outcome.error,
            )
        elif kind is _Ending.DEAD:
            await holder.dead(lease, str(outcome.value), now=now)
            self._counts["failed"] += 1
            log.error("job.dead", **fields, state="dead", error=outcome.value)
        elif kind is _Ending.CANCELLED:
            await holder.cancelled(lease, now=now)
            self._counts["cancelled"] += 1
            log.info("job.cancelled", **fields)
        elif kind is _Ending.SHUTDOWN:
            await holder.give_back(lease, now=now)
            self._counts["given_back"] += 1
            log.info("job.given_back", **fields)
        elif kind is _Ending.LOST:
            raise LeaseLostError(f"job {lease.job.id} was taken over")

    def _fields(self, lease: Lease) -> dict[str, Any]:
        """The structured fields every per-job log line carries."""
        return {"job_id": lease.job.id, "worker": self.spec.worker, "attempt": lease.attempt, "queue": self.queue.name}


async def _finished(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to end without cancelling it if we are cancelled (``asyncio.wait`` minus its cost)."""
    if not task.done():
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_: asyncio.Task[Any]) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        await waiter


def _outcome_of(task: asyncio.Task[Any], lease: Lease) -> _Outcome:
    """How a finished handler task ended, honouring why it was asked to stop."""
    reason = lease.cancel_reason or ("cancelled" if lease.job.cancel_requested else None)
    if task.cancelled() or (reason is not None and task.exception() is not None):
        if reason in ("cancelled", "shutdown", "lost"):
            return _Outcome(_Ending(reason))
        return _Outcome(_Ending.FAIL, "the handler's task was cancelled")
    exc = task.exception()
    if exc is not None:
        return _Outcome(_Ending.FAIL, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, error=exc)
    return _Outcome(_Ending.COMPLETE, task.result())


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


_TRACEBACK_FRAMES = 5
_TRACEBACK_MAX_CHARS = 2000


def short_traceback(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback and its message, at most ~2 KB (for the job record).

    No frame locals, ever: only file, line, function and source line, as ``traceback`` prints them.
    """
    text = "".join(traceback.format_exception(exc, limit=-_TRACEBACK_FRAMES)).rstrip()
    return text if len(text) <= _TRACEBACK_MAX_CHARS else "…" + text[-_TRACEBACK_MAX_CHARS:]
