"""The declarative app object: :class:`Service`.

A service is a registry of frozen specs (see :mod:`shipkit.service.specs`) built by decorators at import
time; :class:`~shipkit.service.runtime.Runtime` reads it and does the work::

    service = Service("kanban", version="1.0.0")

    @service.handler("create", mutation="item.created")
    async def create(item: NewItem) -> Item: ...

    @service.on_event("item.*")
    async def audit(event: ShipEvent) -> None: ...

Why this module is over 450 lines: :class:`Service` is the one registry users read, and every kind
of declaration is an ``add_*`` method (validation, spec) plus its decorator (sugar, the documented
options). Splitting the class across mixins would scatter that one API over several files.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, TypeVar

from shipkit._names import (
    sanitize_consumer_name,
    validate_bucket_name,
    validate_kv_key_pattern,
    validate_service_name,
    validate_subject,
    validate_token,
)
from shipkit.config import KvBucketConfig, StreamConfig
from shipkit.errors import ConfigurationError
from shipkit.jobs.models import Backoff
from shipkit.jobs.worker_spec import JobWorkerSpec
from shipkit.models import ChannelMessage, Event, ShipEvent
from shipkit.primitives.kv import KvEntry
from shipkit.service._registering import registering
from shipkit.service.agent import AgentSpec, build_agent_spec
from shipkit.service.codec import inspect_handler
from shipkit.service.context import Context
from shipkit.service.specs import (
    QUEUE_GROUP_DEFAULT,
    ChannelSpec,
    DefaultHandlerSpec,
    EventSpec,
    HandlerSpec,
    KvWatchSpec,
    MessageSpec,
    MutationCallback,
    check_version,
    takes_context,
)

__all__ = ["Lifespan", "Service", "close_registrations", "reopen_registrations"]

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
A = TypeVar("A", bound=Callable[..., Any])
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]
_UNSET: Any = object()
"""``lifespan(service)`` or ``lifespan(ctx: Context)`` -> an async context manager entered at start
(after connecting and provisioning, before any message is taken) and exited at shutdown."""


def _is_service_context(name: str, annotation: Any) -> bool:
    """The job-worker parameter that receives the service's :class:`Context` (as handlers recognise it)."""
    if isinstance(annotation, type) and issubclass(annotation, Context):
        return True
    return name in ("ctx", "context") and annotation in (inspect.Parameter.empty, Any)


def _stream_name_for(prefix: str) -> str:
    return prefix.upper().replace(".", "_").replace("-", "_")


class Service:
    """A NATS service: request-reply handlers, event consumers, KV watches, subscriptions, jobs.

    Args:
        name: service name (``[A-Za-z0-9_-]+``), shown by ``nats micro ls``.
        version: SemVer version.
        description: shown by service discovery.
        prefix: request subjects are ``{prefix}.{command}``; defaults to ``name``.
        event_prefix: durable events go to ``{event_prefix}.{event_type}`` (default ``ship.events``).
        event_stream: the stream capturing ``{event_prefix}.>``; defaults to the contract's
            event bus (``SHIP_EVENTS`` for the default prefix, 24 h / 100 000 / file).
        queue_group: queue group of request handlers (``None``: every instance answers).
        agent_name: sender name for channels (defaults to ``name``).
        metadata: service metadata for discovery.
        lifespan: async context manager around the running service: ``lifespan(service)``, or
            ``lifespan(ctx)`` when its parameter is annotated ``Context`` or named ``ctx`` (the
            context reaches the service's connection, ``kv(...)``, ``emit(...)`` and ``log``).
        graceful_timeout_s: default grace period for in-flight work at shutdown.
        unknown_command_reply: answer unknown commands under the prefix with the seed's 404
            ``UNKNOWN_COMMAND`` (True, the default) or leave them to other subscribers.
        mutation_transport: ``"jetstream"`` (default) publishes mutation events as ``ShipEvent``
            with the ack awaited; ``"core"`` publishes the raw event payload over core NATS, as
            noesis-ship does when no event stream is configured (nothing is stored).
        job_queue: the :class:`~shipkit.jobs.JobQueue` name ``@service.job_worker`` functions
            take jobs from (default ``"jobs"``).
        replicas: replicas of every stream, bucket and object store the service provisions
            (events, channels, job streams and buckets, KV watch buckets) that is declared at R1;
            ``shipkit run --replicas`` and ``NatsConfig.replicas`` override it. Needs a cluster.
    """

    def __init__(
        self,
        name: str,
        version: str = "0.1.0",
        description: str = "",
        *,
        prefix: str | None = None,
        event_prefix: str | None = None,
        event_stream: StreamConfig | None = None,
        queue_group: str | None = QUEUE_GROUP_DEFAULT,
        agent_name: str | None = None,
        metadata: dict[str, str] | None = None,
        lifespan: Lifespan | None = None,
        graceful_timeout_s: float = 30.0,
        unknown_command_reply: bool = True,
        mutation_transport: Literal["jetstream", "core"] = "jetstream",
        job_queue: str = "jobs",
        replicas: int | None = None,
    ) -> None:
        self.name = validate_service_name(name)
        if replicas is not None and (
            isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5
        ):
            raise ConfigurationError(f"Service {name!r}: replicas must be a whole number from 1 to 5, got {replicas!r}")
        self.replicas = replicas
        self.version = check_version(version)
        self.description = description
        self.prefix = validate_subject(prefix if prefix is not None else name, "service prefix")
        self.event_prefix = validate_subject(event_prefix or "ship.events", "event prefix")
        self.event_stream = event_stream or StreamConfig.event_bus(
            name=_stream_name_for(self.event_prefix), prefix=self.event_prefix
        )
        if queue_group is not None:
            validate_token(queue_group, "queue group")
        self.queue_group = queue_group
        self.agent_name = agent_name or name
        self.metadata = dict(metadata or {})
        self.lifespan = lifespan
        self.lifespan_wants_context = lifespan is not None and takes_context(lifespan, Context)
        self.graceful_timeout_s = graceful_timeout_s
        self.unknown_command_reply = unknown_command_reply
        if mutation_transport not in ("jetstream", "core"):
            raise ConfigurationError(f"mutation_transport must be 'jetstream' or 'core', got {mutation_transport!r}")
        self.mutation_transport = mutation_transport
        self.job_queue = validate_token(job_queue, "job queue name")
        self.handlers: list[HandlerSpec] = []
        self.default_handler_spec: DefaultHandlerSpec | None = None
        self.mutation_callback_func: MutationCallback | None = None
        self.events: list[EventSpec] = []
        self.kv_watches: list[KvWatchSpec] = []
        self.messages: list[MessageSpec] = []
        self.channels: list[ChannelSpec] = []
        self.job_workers: list[JobWorkerSpec] = []
        self.agents: list[AgentSpec] = []
        self.startup_hooks: list[Callable[..., Awaitable[None]]] = []
        self.shutdown_hooks: list[Callable[..., Awaitable[None]]] = []
        self._frozen = False

    def __repr__(self) -> str:
        return f"Service({self.name!r}, version={self.version!r}, prefix={self.prefix!r})"

    # -- registration guard --------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._frozen:
            raise ConfigurationError(f"cannot add {what} to service {self.name!r}: it is already running")

    # -- request-reply -----------------------------------------------------------------------

    def add_handler(
        self,
        name: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *,
        mutation: str | MutationCallback | None = None,
        queue: str | None = _UNSET,
        max_concurrency: int = 256,
        description: str = "",
        metadata: dict[str, str] | None = None,
    ) -> HandlerSpec:
        """Register a request-reply handler on ``{prefix}.{name}``; see :meth:`handler`."""
        self._check_open(f"handler {name!r}")
        validate_subject(name, f"handler name of {getattr(func, '__qualname__', func)}")
        if any(spec.name == name for spec in self.handlers):
            raise ConfigurationError(f"handler {name!r} is registered twice on service {self.name!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"handler {name!r}: max_concurrency must be >= 1")
        if isinstance(mutation, str):
            validate_subject(mutation, f"mutation event type of handler {name!r}")
        queue_group = self.queue_group if queue is _UNSET else queue
        if queue_group is not None:
            validate_token(queue_group, f"queue group of handler {name!r}")
        signature = inspect_handler(func, context_type=Context, allow_stream=True)
        if signature.streams and mutation is not None:
            raise ConfigurationError(
                f"handler {name!r}: a streaming handler (async generator) cannot declare a mutation"
            )
        spec = HandlerSpec(
            name=name,
            func=func,
            signature=signature,
            subject=f"{self.prefix}.{name}",
            queue=queue_group,
            max_concurrency=max_concurrency,
            mutation=mutation,
            description=description or (inspect.getdoc(func) or "").split("\n", 1)[0],
            metadata=dict(metadata or {}),
        )
        self.handlers.append(spec)
        return spec

    def handler(
        self,
        name: str | None = None,
        *,
        mutation: str | MutationCallback | None = None,
        queue: str | None = _UNSET,
        max_concurrency: int = 256,
        description: str = "",
        metadata: dict[str, str] | None = None,
    ) -> Callable[[F], F]:
        """Decorate an async function answering requests on ``{prefix}.{name}``.

        Args:
            name: the command; defaults to the function's name.
            mutation: publish a ``ShipEvent`` of this type (payload = the reply) after success,
                or a callback ``(command, response) -> (event_type, payload) | None``.
            queue: queue group; defaults to the service's (``"q"``). ``None``: every instance answers.
            max_concurrency: how many of these run at once in this process.
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_handler(
                    func.__name__ if name is None else name,
                    func,
                    mutation=mutation,
                    queue=queue,
                    max_concurrency=max_concurrency,
                    description=description,
                    metadata=metadata,
                )
            return func

        return decorator

    def add_default_handler(
        self, func: Callable[[str, bytes], Coroutine[Any, Any, Any]], *, max_concurrency: int = 256
    ) -> None:
        """Register the seed's catch-all handler: ``(subject, payload) -> reply``."""
        self._check_open("a default handler")
        if not inspect.iscoroutinefunction(func):
            raise ConfigurationError(f"default handler {func.__qualname__} must be an `async def` function")
        if self.default_handler_spec is not None:
            raise ConfigurationError(f"service {self.name!r} already has a default handler")
        self.default_handler_spec = DefaultHandlerSpec(func=func, max_concurrency=max_concurrency)

    def default_handler(self, func: F) -> F:
        """Decorate the catch-all for commands no named handler takes (gets the full subject and raw bytes)."""
        self.add_default_handler(func)
        return func

    def mutation_callback(self, func: MutationCallback) -> MutationCallback:
        """Decorate the seed's mutation callback ``(command, response) -> (event_type, payload) | None``.

        Applies to every successful request whose handler declares no ``mutation`` of its own.
        """
        self._check_open("a mutation callback")
        self.mutation_callback_func = func
        return func

    # -- durable events ------------------------------------------------------------------------

    def add_event_handler(
        self,
        pattern: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *,
        durable: str | None = None,
        stream: StreamConfig | None = None,
        prefix: str | None = None,
        max_concurrency: int = 16,
        deliver: Literal["all", "new"] = "all",
        nak_delay_s: float = 1.0,
    ) -> EventSpec:
        """Register a durable event consumer; see :meth:`on_event`."""
        self._check_open(f"event handler for {pattern!r}")
        validate_subject(pattern, f"event pattern of {func.__qualname__}", wildcards=True)
        event_prefix = validate_subject(prefix, "event prefix") if prefix else self.event_prefix
        durable_name = durable or sanitize_consumer_name(f"{self.name}_{func.__name__}")
        validate_token(durable_name, f"durable name of {func.__qualname__}")
        if any(spec.durable == durable_name for spec in self.events):
            raise ConfigurationError(f"durable {durable_name!r} is used twice on service {self.name!r}")
        signature = inspect_handler(func, context_type=Context, what="event handler")
        spec = EventSpec(
            pattern=pattern,
            func=func,
            signature=signature,
            durable=durable_name,
            filter_subject=f"{event_prefix}.{pattern}",
            stream=stream
            or (
                self.event_stream
                if prefix is None
                else StreamConfig.event_bus(name=_stream_name_for(event_prefix), prefix=event_prefix)
            ),
            wants_envelope=signature.payload_type is ShipEvent,
            max_concurrency=max_concurrency,
            deliver=deliver,
            nak_delay_s=nak_delay_s,
        )
        self.events.append(spec)
        return spec

    def on_event(
        self,
        pattern: str,
        *,
        durable: str | None = None,
        stream: StreamConfig | None = None,
        prefix: str | None = None,
        max_concurrency: int = 16,
        deliver: Literal["all", "new"] = "all",
        nak_delay_s: float = 1.0,
    ) -> Callable[[F], F]:
        """Decorate a durable consumer of events matching ``pattern`` (``item.*``, ``job.>``).

        The handler receives the ``ShipEvent`` (annotate ``ShipEvent``) or its typed payload. It is
        acked after success and nak'ed with ``nak_delay_s`` on failure; undecodable events are acked
        and logged. The durable (default ``{service}_{function}``) resumes where it left off.
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_event_handler(
                    pattern,
                    func,
                    durable=durable,
                    stream=stream,
                    prefix=prefix,
                    max_concurrency=max_concurrency,
                    deliver=deliver,
                    nak_delay_s=nak_delay_s,
                )
            return func

        return decorator

    # -- KV watches ----------------------------------------------------------------------------

    def add_kv_watch(
        self, bucket: str | KvBucketConfig, func: Callable[..., Coroutine[Any, Any, Any]], *, key: str = ">"
    ) -> None:
        """Register a KV watch; see :meth:`kv_watch`."""
        self._check_open(f"kv watch on {bucket!r}")
        if isinstance(bucket, KvBucketConfig):
            config = bucket
        else:
            validate_bucket_name(bucket, f"bucket of kv watch {getattr(func, '__qualname__', func)}")
            config = KvBucketConfig(bucket=bucket)
        validate_kv_key_pattern(key, f"key pattern of {func.__qualname__}")
        signature = inspect_handler(func, context_type=Context, what="kv watch")
        wants_entry = isinstance(signature.payload_type, type) and issubclass(signature.payload_type, KvEntry)
        self.kv_watches.append(KvWatchSpec(config, key, func, signature, wants_entry))

    def kv_watch(self, bucket: str | KvBucketConfig, key: str = ">") -> Callable[[F], F]:
        """Decorate a function called for every put and delete in ``bucket`` matching ``key``.

        Current values are delivered first, then changes. Annotate the parameter ``KvEntry`` to get
        key, value, revision and operation; any other annotation validates the value (``None``
        for deletes is passed only when the annotation allows it).
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_kv_watch(bucket, func, key=key)
            return func

        return decorator

    # -- core pub/sub --------------------------------------------------------------------------

    def add_message_handler(
        self,
        subject: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *,
        queue: str | None = None,
        max_concurrency: int = 256,
    ) -> None:
        """Register a core NATS subscription; see :meth:`on_message`."""
        self._check_open(f"message handler for {subject!r}")
        validate_subject(subject, f"subject of {func.__qualname__}", wildcards=True)
        if queue is not None:
            validate_token(queue, f"queue group of {func.__qualname__}")
        signature = inspect_handler(func, context_type=Context, what="message handler")
        self.messages.append(
            MessageSpec(subject, func, signature, queue, max_concurrency, signature.payload_type is Event)
        )

    def on_message(self, subject: str, *, queue: str | None = None, max_concurrency: int = 256) -> Callable[[F], F]:
        """Decorate a core pub/sub subscriber (wildcards allowed; ``queue`` for a queue group).

        Annotate the payload ``Event`` for the pub/sub envelope, or any type/bytes for raw bodies.
        If the message carries a reply subject, the return value is sent back.
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_message_handler(subject, func, queue=queue, max_concurrency=max_concurrency)
            return func

        return decorator

    # -- channels ------------------------------------------------------------------------------

    def add_channel_handler(
        self, channel: str, func: Callable[..., Coroutine[Any, Any, Any]], *, replay_history: bool = False
    ) -> None:
        """Register a channel subscriber; see :meth:`on_channel`."""
        self._check_open(f"channel handler for {channel!r}")
        validate_subject(channel, f"channel of {func.__qualname__}")
        signature = inspect_handler(func, context_type=Context, what="channel handler")
        wants_message = signature.payload_type is ChannelMessage
        self.channels.append(ChannelSpec(channel, func, signature, replay_history, wants_message))

    def on_channel(self, channel: str, *, replay_history: bool = False) -> Callable[[F], F]:
        """Decorate a subscriber of ``channel``; this agent's own messages are filtered out.

        Annotate ``ChannelMessage`` for the whole message, ``str`` for just its content.
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_channel_handler(channel, func, replay_history=replay_history)
            return func

        return decorator

    # -- jobs ----------------------------------------------------------------------------------

    def add_job_worker(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *,
        worker: str | None = None,
        concurrency: int = 1,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout_s: float | None = None,
        lease_s: float = 30.0,
        queue: str | None = None,
        retention_s: float | None = None,
        priority_levels: int = 3,
    ) -> JobWorkerSpec:
        """Register a job worker; see :meth:`job_worker`."""
        self._check_open("a job worker")
        spec = JobWorkerSpec.from_function(
            func,
            worker,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout_s=timeout_s,
            lease_s=lease_s,
            queue=queue,
            retention_s=retention_s,
            priority_levels=priority_levels,
            extra=_is_service_context,
        )
        if any((existing.worker, existing.queue) == (spec.worker, spec.queue) for existing in self.job_workers):
            raise ConfigurationError(f"job worker {spec.worker!r} is registered twice on service {self.name!r}")
        self.job_workers.append(spec)
        return spec

    def job_worker(
        self,
        worker: str | None = None,
        *,
        concurrency: int = 1,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout_s: float | None = None,
        lease_s: float = 30.0,
        queue: str | None = None,
        retention_s: float | None = None,
        priority_levels: int = 3,
    ) -> Callable[[F], F]:
        """Decorate a job worker (see :mod:`shipkit.jobs` and ``docs/jobs.md``): runs jobs for ``worker``.

        The function gets the typed payload, ``job: JobContext`` and ``ctx: Context`` if it asks
        for them, in any order; its return value completes the job, an exception fails the attempt.

        Args:
            worker: the worker name jobs are submitted to; defaults to the function's name.
            queue: the job queue to take jobs from (default: the service's ``job_queue``).
            concurrency: jobs run at once by this process.
            max_attempts: attempts per job (default: the job's, else the queue's).
            backoff: delays between attempts.
            timeout_s: an attempt running longer fails.
            lease_s: how long a claimed job stays held without a heartbeat.
            retention_s: finished jobs of this worker are deleted this long after they end.
            priority_levels: 3 (``high``, ``normal``, ``low``), 2 (no ``low``) or 1 (``normal`` only).
        """

        def decorator(func: F) -> F:
            with registering(func):
                self.add_job_worker(
                    func,
                    worker=worker,
                    concurrency=concurrency,
                    max_attempts=max_attempts,
                    backoff=backoff,
                    timeout_s=timeout_s,
                    lease_s=lease_s,
                    queue=queue,
                    retention_s=retention_s,
                    priority_levels=priority_levels,
                )
            return func

        return decorator

    # -- agents (the Synadia Agent Protocol for NATS) -----------------------------------------

    def add_agent(self, name: str, func: Callable[..., Any], *, owner: str, **options: Any) -> AgentSpec:
        """Register an agent; see :meth:`agent` (options as there)."""
        self._check_open(f"agent {name!r}")
        spec = build_agent_spec(name, func, owner=owner, **options)
        if any(existing.subjects == spec.subjects for existing in self.agents):
            raise ConfigurationError(f"agent {name!r} (owner {owner!r}) is registered twice on service {self.name!r}")
        self.agents.append(spec)
        return spec

    def agent(
        self,
        name: str,
        *,
        owner: str,
        session: str = "default",
        description: str = "",
        attachments_ok: bool = True,
        max_payload: int | str | None = None,
        keepalive_s: float = 15.0,
        heartbeat_s: int = 30,
        max_concurrency: int = 64,
    ) -> Callable[[A], A]:
        """Decorate an async generator hosted as an agent (see :mod:`shipkit.service.agent`).

        Args:
            name: the agent's name (``[a-z0-9-]+``), the third subject token.
            owner: who runs it (``[a-z0-9_-]+``).
            session: the session token of its subjects.
            description: shown by discovery (default: the docstring's first line).
            attachments_ok: accept prompts with attachments.
            max_payload: largest prompt in bytes or as ``"1MB"`` (default and ceiling: the server's).
            keepalive_s: send an ``ack`` status after this much silence.
            heartbeat_s: heartbeat interval in whole seconds.
            max_concurrency: prompts handled at once by this process.
        """

        def decorator(func: A) -> A:
            with registering(func):
                self.add_agent(
                    name,
                    func,
                    owner=owner,
                    session=session,
                    description=description,
                    attachments_ok=attachments_ok,
                    max_payload=max_payload,
                    keepalive_s=keepalive_s,
                    heartbeat_s=heartbeat_s,
                    max_concurrency=max_concurrency,
                )
            return func

        return decorator

    # -- lifecycle hooks -----------------------------------------------------------------------

    def on_startup(self, func: H) -> H:
        """Decorate a hook run after connecting, before taking messages.

        The hook takes no parameter, or one ``ctx: Context`` (its ``connection``, ``kv(...)``,
        ``emit(...)`` and ``log`` reach the running service's resources).
        """
        self._check_open("a startup hook")
        self.startup_hooks.append(func)
        return func

    def on_shutdown(self, func: H) -> H:
        """Decorate a hook run at shutdown after in-flight work finished (seed: ``on_shutdown``).

        Like :meth:`on_startup`, it may take one ``ctx: Context`` parameter.
        """
        self._check_open("a shutdown hook")
        self.shutdown_hooks.append(func)
        return func

    # -- running ---------------------------------------------------------------------------------

    def run(self, nats_url: str | None = None, **options: Any) -> None:
        """Run until SIGINT/SIGTERM (blocking); see :func:`shipkit.service.runner.run` for options."""
        # The one documented upward call of the layer (runner imports runtime, which imports this
        # module): a convenience for scripts, imported late so importing a Service stays cheap.
        from shipkit.service.runner import run

        run(self, nats_url=nats_url, **options)

    @property
    def publishes_durable_mutations(self) -> bool:
        """True when some handler publishes mutation events through JetStream."""
        declared = any(h.mutation is not None for h in self.handlers) or self.mutation_callback_func is not None
        return declared and self.mutation_transport == "jetstream"


def close_registrations(service: Service) -> None:
    """Refuse further registrations on ``service`` (the runtime calls this at start)."""
    service._frozen = True


def reopen_registrations(service: Service) -> None:
    """Allow registrations on ``service`` again after its runtime stopped."""
    service._frozen = False
