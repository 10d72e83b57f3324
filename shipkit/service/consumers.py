"""Start the runtime's long-lived consumers: durable events, KV watches, channels, job workers.

Each ``start_*`` function returns *stoppers*: ``async (grace_s) -> Counts | None`` callables the
runtime awaits at shutdown, so every consumer stops its intake, gets the grace period, and
settles what it could not finish (events nak'ed, jobs given back to the queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from shipkit.errors import SerializationError
from shipkit.jobs import JobContext, JobWorker, JobWorkerSpec
from shipkit.logging import get_logger
from shipkit.models import ChannelMessage, ShipEvent
from shipkit.primitives.channels import ChannelService
from shipkit.primitives.consumer import DurableConsumer
from shipkit.primitives.kv import KvEntry, KvWatch
from shipkit.service.context import Context
from shipkit.service.host import Counts, Host
from shipkit.service.specs import ChannelSpec, EventSpec, KvWatchSpec

__all__ = ["Stopper", "start_channel_handlers", "start_event_consumers", "start_job_workers", "start_kv_watches"]

log = get_logger("shipkit.consumers")

MsgHandler = Callable[[Any], Coroutine[Any, Any, None]]
Stopper = Callable[[float], Coroutine[Any, Any, Counts | None]]
"""``async (grace_s) -> Counts | None``: stop intake, give in-flight work the grace, settle the rest."""


async def _call_counted(host: Host, coro: Coroutine[Any, Any, Any]) -> Any:
    """Await a handler, counting it handled, failed or cancelled (the exception propagates)."""
    try:
        result = await coro
    except asyncio.CancelledError:
        host.counts.cancelled += 1
        raise
    except Exception:
        host.counts.failed += 1
        raise
    host.counts.handled += 1
    return result


# -- @service.on_event ------------------------------------------------------------------------


def _event_handler(host: Host, spec: EventSpec) -> Callable[[Any], Coroutine[Any, Any, None]]:
    signature = spec.signature

    async def on_msg(msg: Any) -> None:
        event = ShipEvent.from_json(msg.data)  # SerializationError: the consumer acks and logs it
        if spec.wants_envelope or signature.payload_param is None:
            payload: Any = event
        else:
            try:
                payload = signature.from_python(event.payload)
            except ValidationError as exc:  # will never validate: ack and log, do not redeliver forever
                raise SerializationError(
                    f"event {event.event_type!r} ({msg.subject}) payload does not fit {spec.func.__qualname__}: {exc}"
                ) from exc
        context = None
        if signature.context_param is not None:
            context = Context(host, msg.subject, msg.headers or {}, None, event.correlation_id)
        await _call_counted(host, spec.func(*signature.call_args(payload, context)))

    return on_msg


async def start_event_consumers(
    host: Host, specs: Sequence[EventSpec], *, wrap: Callable[[str, MsgHandler], MsgHandler] | None = None
) -> list[Stopper]:
    """One durable pull consumer per ``@service.on_event`` (created or attached as it is).

    ``wrap(durable, handler)``, decided once at start, instruments each handler (metrics, tracing).
    """
    stoppers: list[Stopper] = []
    for spec in specs:
        handler = _event_handler(host, spec)
        consumer = DurableConsumer(
            host.connection,
            stream=spec.stream.name,
            filter_subject=spec.filter_subject,
            durable=spec.durable,
            handler=wrap(spec.durable, handler) if wrap is not None else handler,
            deliver=spec.deliver,
            max_in_flight=spec.max_concurrency,
            nak_delay_s=spec.nak_delay_s,
        )
        await consumer.start()

        async def stop(grace_s: float, consumer: DurableConsumer = consumer) -> None:
            await consumer.stop(timeout_s=grace_s)

        stoppers.append(stop)
    return stoppers


# -- @service.kv_watch --------------------------------------------------------------------------


async def _run_watch(host: Host, spec: KvWatchSpec, watch: KvWatch) -> None:
    signature = spec.signature
    async for entry in watch:
        try:
            payload = _watch_payload(spec, entry)
        except ValidationError as exc:
            if entry.deleted:
                continue  # a typed handler gets values; deletes reach handlers taking KvEntry
            log.warning(
                "kv_watch.invalid_value",
                bucket=entry.bucket,
                key=entry.key,
                revision=entry.revision,
                handler=spec.func.__qualname__,
                error=str(exc).splitlines()[0],
            )
            continue
        context = None
        if signature.context_param is not None:
            context = Context(host, f"$KV.{entry.bucket}.{entry.key}")
        try:
            await _call_counted(host, spec.func(*signature.call_args(payload, context)))
        except Exception:  # a KV change is not redelivered: log it loudly and keep watching
            log.exception(
                "kv_watch.handler_failed",
                bucket=entry.bucket,
                key=entry.key,
                revision=entry.revision,
                handler=spec.func.__qualname__,
            )


def _watch_payload(spec: KvWatchSpec, entry: KvEntry) -> Any:
    if spec.wants_entry or spec.signature.payload_param is None:
        return entry
    return spec.signature.from_python(entry.value)


async def start_kv_watches(
    host: Host, specs: Sequence[KvWatchSpec], *, wrap: Callable[[KvWatchSpec], KvWatchSpec] | None = None
) -> list[Stopper]:
    """One watch per ``@service.kv_watch``: current values first, then puts and deletes.

    ``wrap(spec)``, decided once at start, instruments each function (tracing).
    """
    stoppers: list[Stopper] = []
    for declared in specs:
        spec = wrap(declared) if wrap is not None else declared
        store = await host.kv(spec.bucket)
        watch = await store.watch(spec.key).start()
        task = asyncio.create_task(_run_watch(host, spec, watch), name=f"kv_watch:{spec.bucket.bucket}")

        async def stop(grace_s: float, watch: KvWatch = watch, task: asyncio.Task[None] = task) -> None:
            await watch.aclose()  # ends iteration; the entry being handled gets the grace
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            elif task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

        stoppers.append(stop)
    return stoppers


# -- @service.on_channel ------------------------------------------------------------------------


def _channel_handler(host: Host, spec: ChannelSpec) -> Callable[[ChannelMessage], Coroutine[Any, Any, None]]:
    signature = spec.signature

    async def on_message(message: ChannelMessage) -> None:
        payload: Any = message
        if not spec.wants_message and signature.payload_param is not None:
            try:
                payload = signature.from_python(message.content)
            except ValidationError as exc:
                raise SerializationError(f"channel {spec.channel!r} message {message.message_id}: {exc}") from exc
        context = None
        if signature.context_param is not None:
            context = Context(host, f"ship.channel.{message.channel}")
        await _call_counted(host, spec.func(*signature.call_args(payload, context)))

    return on_message


async def start_channel_handlers(host: Host, agent_name: str, specs: Sequence[ChannelSpec]) -> list[Stopper]:
    """Channel subscriptions (durable ``{agent}_{channel}``), own messages filtered out."""
    channels = ChannelService(agent_name, host.connection)
    await channels.connect()
    stoppers: list[Stopper] = []
    for spec in specs:
        consumer = await channels.subscribe(
            spec.channel, _channel_handler(host, spec), replay_history=spec.replay_history
        )

        async def stop(grace_s: float, consumer: Any = consumer) -> None:
            await consumer.stop(timeout_s=grace_s)

        stoppers.append(stop)
    return stoppers


# -- @service.job_worker ------------------------------------------------------------------------


async def start_job_workers(
    host: Host,
    queue_name: str,
    specs: Sequence[JobWorkerSpec],
    *,
    wrap: Callable[[JobWorkerSpec], JobWorkerSpec] | None = None,
) -> list[Stopper]:
    """Job-worker runners for every ``@service.job_worker``, each on its queue (default ``queue_name``).

    ``wrap(spec)``, decided once at start, instruments each handler (metrics, tracing). The
    queues are the host's (shared with ``ctx.jobs``), closed by the host after this stopper
    ran, so their background publishers outlive the workers. A worker asking for ``ctx`` gets a
    :class:`Context` per job, bound to the job's id as correlation id.
    """
    workers: list[JobWorker] = []
    try:
        for spec in specs:
            queue = await host.job_queue(spec.queue or queue_name)
            worker = JobWorker(
                queue, wrap(spec) if wrap is not None else spec, extra=_job_context_maker(host, queue.name)
            )
            workers.append(worker)
            await worker.start()
    except BaseException:
        await asyncio.gather(*(worker.stop(0) for worker in workers), return_exceptions=True)
        raise

    host.count_in_flight(lambda: sum(worker.in_flight for worker in workers))

    def interrupt(_: object) -> None:
        for worker in workers:
            worker.interrupt()

    async def stop(grace_s: float) -> Counts:
        # A forced shutdown (second SIGINT) arriving during the grace gives running jobs back now.
        forced = asyncio.ensure_future(host.force_exit.wait())
        forced.add_done_callback(lambda f: None if f.cancelled() else interrupt(f))
        try:
            all_stats = await asyncio.gather(*(worker.stop(grace_s) for worker in workers))
        finally:
            forced.cancel()
        return Counts(
            handled=sum(s.handled for s in all_stats),
            failed=sum(s.failed for s in all_stats),
            # interrupted work: cancelled on request, or given back to the queue at shutdown
            cancelled=sum(s.cancelled + s.given_back for s in all_stats),
        )

    return [stop]


def _job_context_maker(host: Host, queue: str) -> Callable[[JobContext], Context]:
    def make(job: JobContext) -> Context:
        return Context(host, f"jobs.{queue}.{job.worker}", correlation_id=job.id)

    return make
