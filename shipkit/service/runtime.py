"""Runs a :class:`~shipkit.service.app.Service`: connect, provision, subscribe, dispatch, shut down in order.

Shutdown is a small ordered state machine (signal capture lives in :mod:`shipkit.service.runner`)::

    stop intake (discovery, subscriptions, consumers, watches, job claiming)
    -> in-flight work finishes within graceful_timeout_s (force skips the wait)
    -> the rest is cancelled loudly: requests get a 503 reply, events are nak'ed, jobs go back
    -> shutdown hooks, then the lifespan exits
    -> resources close last-in-first-out, the connection drains
    -> one summary line: handled, failed, cancelled

Over 450 lines on purpose: start-up and shutdown are each one ordered sequence, and each step of
one has its mirror in the other; one class keeps both orders readable in one place. The stores
handlers reach (event bus, KV, objects, job queues) live in :mod:`shipkit.service.resources`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from shipkit.config import KvBucketConfig, NatsConfig, ObjectStoreConfig
from shipkit.connection import ConnectionManager, ProvisionMode, resolve_connection
from shipkit.errors import ConfigurationError, StartupInterruptedError
from shipkit.jobs import JobQueue
from shipkit.logging import get_logger
from shipkit.models import ShipEvent
from shipkit.primitives.eventbus import EventBus
from shipkit.primitives.kv import KvStore
from shipkit.primitives.objects import ShipObjectStore
from shipkit.service.agent_host import start_agents
from shipkit.service.app import Service, close_registrations, reopen_registrations
from shipkit.service.consumers import (
    start_channel_handlers,
    start_event_consumers,
    start_job_workers,
    start_kv_watches,
)
from shipkit.service.context import Context
from shipkit.service.discovery import Discovery, ServiceIdentity, new_instance_id
from shipkit.service.endpoint import Endpoint
from shipkit.service.host import Counts
from shipkit.service.name_guard import NameGuard, guard_name
from shipkit.service.observability import Observability
from shipkit.service.resources import ServiceResources
from shipkit.service.router import Router, mutation_hook
from shipkit.service.streaming import StreamCancels, StreamEndpoint

__all__ = ["Counts", "Runtime", "RuntimeState"]


log = get_logger("shipkit.runtime")


class RuntimeState(enum.Enum):
    """Where the runtime is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Runtime:
    """The running form of a service; implements the :class:`~shipkit.service.host.Host` protocol.

    Args:
        service: what to run.
        connection: a shared :class:`ConnectionManager` (not closed by the runtime), a
            :class:`NatsConfig` or URL (an owned connection), or None (environment default).
        graceful_timeout_s: grace period for in-flight work; defaults to the service's.
        provision: ``"create"`` missing streams/buckets/consumers, or ``"verify"`` they exist.
        metrics_port: serve Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` on this port
            (0: a free one; None, the default: off, at no cost per message).
        metrics_host: the interface the metrics/health server binds.
        name_guard: ask discovery at start for other services of the same name
            (:mod:`~shipkit.service.name_guard`); ``serve`` and ``shipkit run`` use ``"warn"``.
        replicas: replicas of what the runtime provisions (default: the service's, else the
            connection config's ``replicas`` / ``SHIPKIT_REPLICAS``).
    """

    def __init__(
        self,
        service: Service,
        connection: ConnectionManager | NatsConfig | str | None = None,
        *,
        graceful_timeout_s: float | None = None,
        provision: ProvisionMode = "create",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        name_guard: NameGuard = "off",
        replicas: int | None = None,
    ) -> None:
        self.service = service
        self.name_guard: NameGuard = name_guard
        self.service_name = service.name
        self.connection, self._owns_connection = resolve_connection(connection)
        if replicas is not None or service.replicas is not None:
            self.connection.replicas = replicas if replicas is not None else service.replicas
        if provision == "verify":
            self.connection.provision = "verify"
        self.graceful_timeout_s = service.graceful_timeout_s if graceful_timeout_s is None else graceful_timeout_s
        self.instance_id = new_instance_id()
        self.state = RuntimeState.NEW
        self.counts = Counts()
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.endpoints: list[Endpoint] = []
        self.discovery: Discovery | None = None
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight_probes: list[Callable[[], int]] = []
        self._stoppers: list[Callable[[float], Coroutine[Any, Any, Any]]] = []
        self._exit_stack = AsyncExitStack()
        self.resources = ServiceResources(
            self.connection,
            source=service.name,
            event_stream=service.event_stream,
            event_prefix=service.event_prefix,
        )
        self.default_job_queue = service.job_queue
        self._client: NatsClient | None = None
        self._cancels: StreamCancels | None = None
        self._taking_work = False
        self.observability = Observability(
            self,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            job_queue=service.job_queue if service.job_workers else None,
        )

    @property
    def in_flight(self) -> int:
        """Handler tasks running now (suspended requests and messages)."""
        return len(self._tasks)

    @property
    def ready(self) -> bool:
        """Started (provisioned, consumers running) and not shutting down: what ``/readyz`` reports."""
        return self.state is RuntimeState.RUNNING

    # -- the Host protocol: what endpoints, consumers and contexts reach --------------------------

    @property
    def client(self) -> NatsClient:
        """The raw nats-py client (cached at start for the hot path)."""
        if self._client is None:
            self._client = self.connection.client
        return self._client

    def track(self, task: asyncio.Task[Any], on_done: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        """Keep a handler task until it ends (graceful shutdown waits for these)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if on_done is not None:
            task.add_done_callback(on_done)

    def count_in_flight(self, probe: Callable[[], int]) -> None:
        """Count ``probe()`` (e.g. running jobs) as in-flight work in the shutdown line."""
        self._in_flight_probes.append(probe)

    # -- resources for handlers (made on first use; see shipkit.service.resources) -------------

    async def event_bus(self) -> EventBus:
        """The service's event bus (created on first use)."""
        return await self.resources.event_bus()

    async def emit(self, event_type: str, payload: Any = None, *, correlation_id: str | None = None) -> ShipEvent:
        """Publish a ``ShipEvent`` to ``{event_prefix}.{event_type}`` and await the JetStream ack."""
        return await self.resources.emit(event_type, payload, correlation_id=correlation_id)

    async def kv(self, bucket: str | KvBucketConfig) -> KvStore:
        """A :class:`KvStore` on the shared connection (bucket created if missing)."""
        return await self.resources.kv(bucket)

    async def objects(self, bucket: str | ObjectStoreConfig) -> ShipObjectStore:
        """A :class:`ShipObjectStore` on the shared connection (bucket created if missing)."""
        return await self.resources.objects(bucket)

    async def job_queue(self, name: str) -> JobQueue[Any]:
        """The connected :class:`JobQueue` ``name`` on the shared connection (closed at shutdown)."""
        return await self.resources.job_queue(name)

    # -- start ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, provision, run startup hooks and the lifespan, then start taking messages.

        Raises:
            ShipkitError: connecting or provisioning failed (e.g. ``ProvisioningError`` in
                verify mode); everything started so far is stopped again.
        """
        if self.state is not RuntimeState.NEW:
            raise ConfigurationError(f"runtime of {self.service.name!r} was already started ({self.state.value})")
        self.state = RuntimeState.STARTING
        close_registrations(self.service)
        try:
            await self._start()
        except BaseException:
            await self._abort_start()
            raise
        self.state = RuntimeState.RUNNING
        log.info(
            "service.started",
            service=self.service.name,
            version=self.service.version,
            instance_id=self.instance_id,
            handlers=len(self.service.handlers),
            events=len(self.service.events),
            kv_watches=len(self.service.kv_watches),
            job_workers=len(self.service.job_workers),
        )

    async def _start(self) -> None:
        service = self.service
        await self.observability.start()
        await self.connection.connect()
        self._client = self.connection.client
        await self._provision()
        if service.lifespan is not None:
            argument = Context(self, service.prefix) if service.lifespan_wants_context else service
            await self._exit_stack.enter_async_context(service.lifespan(argument))
        for hook in service.startup_hooks:
            await self._call_hook(hook)
        # From here on requests are answered: a signal now means a graceful shutdown once start()
        # has finished, not an abandoned start (see _start_unless_exit).
        self._taking_work = True
        await self._start_requests()
        await self._start_messages()
        await self._start_consumers()
        identity = ServiceIdentity(service.name, service.version, service.description, service.metadata)
        if self.name_guard != "off":  # before our own discovery answers, so we never see ourselves
            await guard_name(self.client, identity, self.endpoints, strict=self.name_guard == "strict")
        self.discovery = Discovery(identity, self.endpoints, self.instance_id)
        await self.discovery.start(self.client)
        await self.connection.confirm_sent()  # the server knows every subscription before start() returns

    def _call_hook(self, hook: Callable[..., Any]) -> Any:
        """Call a startup/shutdown hook, with a :class:`Context` when it takes a parameter."""
        if inspect.signature(hook).parameters:
            return hook(Context(self, self.service.prefix))
        return hook()

    async def _provision(self) -> None:
        """Create (or verify) every stream the declarations need, before any subscription."""
        service = self.service
        streams = {spec.stream.name: spec.stream for spec in service.events}
        if service.publishes_durable_mutations:
            streams[service.event_stream.name] = service.event_stream
        for stream in streams.values():
            await self.connection.ensure_stream(stream)
        if streams.get(service.event_stream.name) is not None:
            await self.event_bus()

    async def _abort_start(self) -> None:
        try:
            await self._stop_intake()
            await self._exit_stack.aclose()
            await self.observability.stop()
        finally:
            await self.resources.close_job_queues()
            if self._owns_connection:
                await self.connection.close()
            reopen_registrations(self.service)
            self.state = RuntimeState.STOPPED

    # -- request handlers ------------------------------------------------------------------------

    async def _stream_cancels(self) -> StreamCancels:
        """The cancel subjects of this runtime's streams (subscribed on first use, at start)."""
        if self._cancels is None:
            self._cancels = StreamCancels(self.instance_id)
            await self._cancels.start(self.client)
            self._exit_stack.push_async_callback(self._cancels.stop)  # after in-flight streams ended
        return self._cancels

    async def _start_requests(self) -> None:
        service = self.service
        shared: dict[str, Endpoint] = {}
        for spec in service.handlers:
            if spec.signature.streams:  # an async generator: every request is a streamed reply
                endpoint: Endpoint = StreamEndpoint.from_spec(self, spec, await self._stream_cancels())
            else:
                endpoint = self.observability.new_endpoint(
                    self,
                    spec.endpoint_name,
                    spec.subject,
                    spec.func,
                    spec.signature,
                    max_concurrency=spec.max_concurrency,
                    queue_group=spec.queue,
                    after_success=mutation_hook(self, service, spec.name, spec.mutation),
                    metadata=spec.metadata,
                )
            self.endpoints.append(endpoint)
            if spec.queue == service.queue_group:
                shared[spec.name] = endpoint
            else:  # its own queue group: its own subscription, and the catch-all leaves it alone
                self._subscriptions.append(
                    await self.client.subscribe(spec.subject, queue=spec.queue or "", cb=endpoint.handle)
                )
        separate = {spec.name for spec in service.handlers} - set(shared)
        if not shared and service.default_handler_spec is None and not service.unknown_command_reply:
            return
        if not service.handlers and service.default_handler_spec is None:
            return
        router = Router(self, service, shared, separate, self.observability.new_endpoint)
        if router.default is not None:
            self.endpoints.append(router.default)
        self._subscriptions.append(
            await self.client.subscribe(f"{service.prefix}.>", queue=service.queue_group or "", cb=router.route)
        )

    # -- other declarations ---------------------------------------------------------------------

    async def _start_messages(self) -> None:
        for spec in self.service.messages:
            endpoint = Endpoint(
                self,
                spec.subject,
                spec.subject,
                spec.func,
                spec.signature,
                max_concurrency=spec.max_concurrency,
                queue_group=spec.queue,
            )
            self._subscriptions.append(
                await self.client.subscribe(spec.subject, queue=spec.queue or "", cb=endpoint.handle)
            )

    async def _start_consumers(self) -> None:
        """Durable events, KV watches, channels, then job workers: each returns its stoppers."""
        service = self.service
        if service.events:
            wrap_event = self.observability.wrap_event_handler
            self._stoppers.extend(await start_event_consumers(self, service.events, wrap=wrap_event))
        if service.kv_watches:
            wrap_watch = self.observability.wrap_kv_watch
            self._stoppers.extend(await start_kv_watches(self, service.kv_watches, wrap=wrap_watch))
        if service.channels:
            self._stoppers.extend(await start_channel_handlers(self, service.agent_name, service.channels))
        if service.job_workers:
            wrap_job = self.observability.wrap_job_worker
            self._stoppers.extend(await start_job_workers(self, service.job_queue, service.job_workers, wrap=wrap_job))
        if service.agents:
            cancels = await self._stream_cancels()
            self._stoppers.extend(await start_agents(self, service.agents, cancels, service.version))

    # -- run and stop -----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Start, wait for :attr:`should_exit`, then shut down.

        Raises:
            StartupInterruptedError: :meth:`request_exit` (a signal) came while connecting or
                provisioning; what had started is stopped again.
        """
        await _start_unless_exit(self)
        try:
            await self.should_exit.wait()
        finally:
            await self.shutdown()

    def request_exit(self, *, force: bool = False) -> None:
        """Ask the runtime to stop (what the signal capture calls); ``force`` skips the grace."""
        if force:
            self.force_exit.set()
        self.should_exit.set()

    async def shutdown(self) -> Counts:
        """Stop in order (see the module docstring); safe to call more than once."""
        if self.state in (RuntimeState.STOPPING, RuntimeState.STOPPED, RuntimeState.NEW):
            return self.counts
        self.state = RuntimeState.STOPPING
        started = time.monotonic()
        log.info(
            "shutdown.started",
            service=self.service.name,
            in_flight=len(self._tasks) + sum(probe() for probe in self._in_flight_probes),
            graceful_timeout_s=self.graceful_timeout_s,
        )
        errors: list[BaseException] = []
        deadline = started + (0 if self.force_exit.is_set() else self.graceful_timeout_s)
        await self._collect(errors, self._stop_intake(deadline))
        await self._collect(errors, self._stop_consumers(deadline))
        await self._collect(errors, self._wait_in_flight(deadline))
        await self._collect(errors, self._cancel_in_flight())
        for hook in self.service.shutdown_hooks:
            await self._collect(errors, _as_coroutine(self._call_hook(hook)))
        await self._collect(errors, self._exit_stack.aclose())
        await self._collect(errors, self.observability.stop())
        await self._collect(errors, self.resources.close_job_queues())
        if self._owns_connection:
            await self._collect(errors, self.connection.close())
        reopen_registrations(self.service)
        self.state = RuntimeState.STOPPED
        log.info(
            "shutdown.complete",
            service=self.service.name,
            handled=self.counts.handled,
            failed=self.counts.failed,
            cancelled=self.counts.cancelled,
            duration_s=round(time.monotonic() - started, 3),
            errors=len(errors),
        )
        return self.counts

    @staticmethod
    async def _collect(errors: list[BaseException], step: Coroutine[Any, Any, Any]) -> None:
        """Run one shutdown step; log and remember a failure so the next steps still run."""
        try:
            await step
        except Exception as exc:
            errors.append(exc)
            log.error("shutdown.step_failed", step=getattr(step, "__qualname__", str(step)), exc_info=exc)

    async def _stop_intake(self, deadline: float | None = None) -> None:
        """Stop answering discovery, then drain request/message subscriptions.

        Draining tells the server to stop sending and still dispatches what already arrived,
        so a request in nats-py's buffer is answered rather than left to time out; it is
        bounded by the grace period (and skipped when forced).
        """
        if self.discovery is not None:
            await self.discovery.stop()
        subscriptions, self._subscriptions = self._subscriptions, []
        if not subscriptions:
            return
        remaining = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if remaining > 0 and self.connection.is_connected:
            drains = [asyncio.ensure_future(s.drain()) for s in subscriptions]  # type: ignore[no-untyped-call]
            _, pending = await asyncio.wait(drains, timeout=remaining)
            for task in pending:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
            subscriptions = [s for s, d in zip(subscriptions, drains, strict=True) if d in pending or d.exception()]
        for subscription in subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception as exc:  # already closed with its connection: nothing left to stop
                log.debug("subscription.unsubscribe_failed", subject=subscription.subject, error=repr(exc))

    async def _stop_consumers(self, deadline: float) -> None:
        """Durable consumers, watches and job workers: each stops intake and gets the grace."""
        stoppers, self._stoppers = self._stoppers, []
        results = await asyncio.gather(
            *(stop(max(0.0, deadline - time.monotonic())) for stop in reversed(stoppers)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("shutdown.consumer_stop_failed", exc_info=result)
            elif isinstance(result, Counts):
                self.counts.add(result)

    async def _wait_in_flight(self, deadline: float) -> None:
        while self._tasks and not self.force_exit.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            force = asyncio.ensure_future(self.force_exit.wait())
            try:
                await asyncio.wait({*self._tasks, force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                force.cancel()

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._tasks)
        if not tasks:
            return
        log.warning("shutdown.cancelling", tasks=len(tasks), reason="grace period over or forced")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _start_unless_exit(runtime: Runtime) -> None:
    """``runtime.start()``, abandoned at once when an exit is requested before it finishes."""
    starting = asyncio.ensure_future(runtime.start())
    exit_requested = asyncio.ensure_future(runtime.should_exit.wait())
    try:
        await asyncio.wait({starting, exit_requested}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exit_requested.cancel()
    if not starting.done() and runtime._taking_work:  # already answering: finish, then shut down in order
        await starting
        return
    if not starting.done():
        starting.cancel()  # start() stops what it began (its BaseException path) before ending
        await asyncio.gather(starting, return_exceptions=True)
        raise StartupInterruptedError(
            f"{runtime.service.name}: stopped by a signal while connecting or provisioning; it did not start"
        )
    starting.result()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable
