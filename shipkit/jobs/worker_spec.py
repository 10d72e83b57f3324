"""A job handler registration, validated once: :class:`JobWorkerSpec`.

This is the integration contract between the job system and the decorator runtime:
``@service.job_worker(...)`` builds a spec with :meth:`JobWorkerSpec.from_function` at import
time (so a bad handler fails there, naming the function), and at start the runtime runs one
:class:`~shipkit.jobs.worker.JobWorker` per spec::

    spec = JobWorkerSpec.from_function(train, worker="trainer", concurrency=2, max_attempts=5,
                                       backoff=Backoff(initial_s=2), timeout_s=3600, lease_s=30)
    worker = JobWorker(queue, spec)
    await worker.start()                  # claims up to `concurrency` jobs at a time
    ...
    stats = await worker.stop(graceful_timeout_s=30)   # running jobs finish or go back to the queue

Handler shape: ``async def handler(payload: T, job: JobContext) -> R``, parameters in any
order. A parameter named ``job`` or annotated :class:`JobContext` receives the context; the
caller may name one more role (``extra``: the service's ``ctx: Context`` under
``@service.job_worker``); the first remaining parameter without a default is the payload, its
annotation the payload type (a pydantic model, a dataclass, ``dict[str, Any]``, ... ; no
annotation means any JSON); any other parameter needs a default. The return value (JSON-able)
completes the job; an exception fails the attempt.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from shipkit._names import validate_token
from shipkit._type_errors import unsupported_payload_type
from shipkit.errors import ConfigurationError
from shipkit.jobs.context import JobContext
from shipkit.jobs.models import MAX_PRIORITY_LEVELS, MIN_PRIORITY_LEVELS, Backoff

__all__ = ["JobHandler", "JobWorkerSpec", "ParamMatcher"]

JobHandler = Callable[..., Awaitable[Any]]
ParamMatcher = Callable[[str, Any], bool]
"""``(parameter name, annotation) -> bool``: does this parameter take the caller's extra argument?"""


def _qualname(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


@dataclass(frozen=True, slots=True)
class JobWorkerSpec:
    """One job handler and its policies, validated at construction.

    Attributes:
        func: the ``async def`` handler.
        worker: the worker name it serves (a subject token).
        payload_type: the payload parameter's annotation (``Any`` when absent).
        payload_param: the name of the parameter receiving the payload, if any.
        context_param: the name of the parameter receiving the :class:`JobContext`, if any.
        extra_param: the name of the parameter receiving the caller's extra argument, if any.
        queue: the queue's name (None: the runner's default).
        concurrency: jobs run at once by one :class:`JobWorker` (>= 1).
        max_attempts: attempts per job unless the job says otherwise (None: the queue's).
        backoff: delays between attempts (None: the queue's).
        timeout_s: per-attempt timeout; the handler is cancelled and the attempt fails.
        lease_s: how long a job stays held without a heartbeat (heartbeats go every third).
        retention_s: finished jobs of this worker are deleted this long after they end (None: kept).
        priority_levels: priority levels served (``low``, ``normal``, ``high``, ...; see ``priority``).
        qualname: ``module.function`` for messages.
        adapter: the payload validator, built once.
    """

    func: JobHandler
    worker: str
    payload_type: Any = Any
    payload_param: str | None = None
    context_param: str | None = None
    extra_param: str | None = None
    queue: str | None = None
    concurrency: int = 1
    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout_s: float | None = None
    lease_s: float = 30.0
    retention_s: float | None = None
    priority_levels: int = 3
    qualname: str = ""
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)
    positional: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        name = self.qualname or _qualname(self.func)
        object.__setattr__(self, "qualname", name)

        def bad(reason: str) -> ConfigurationError:
            return ConfigurationError(f"job worker {name}: {reason}")

        if not inspect.iscoroutinefunction(self.func):
            raise bad("the handler must be an `async def` function")
        try:
            validate_token(self.worker, "worker name")
        except ConfigurationError as exc:
            raise bad(str(exc)) from None
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise bad(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise bad(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise bad(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.lease_s <= 0:
            raise bad(f"lease_s must be > 0, got {self.lease_s!r}")
        if self.retention_s is not None and self.retention_s <= 0:
            raise bad(f"retention_s must be > 0, got {self.retention_s!r}")
        levels = self.priority_levels
        if not isinstance(levels, int) or not MIN_PRIORITY_LEVELS <= levels <= MAX_PRIORITY_LEVELS:
            raise bad(f"priority_levels must be {MIN_PRIORITY_LEVELS}..{MAX_PRIORITY_LEVELS}, got {levels!r}")
        if self.queue is not None:
            try:
                validate_token(self.queue, "queue name")
            except ConfigurationError as exc:
                raise bad(str(exc)) from None
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise bad(f"backoff must be a shipkit.jobs.Backoff, got {type(self.backoff).__name__}")
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(self.payload_type)
        except Exception as exc:  # pydantic raises several types for unsupported annotations
            raise ConfigurationError(unsupported_payload_type(f"job worker {name}", self.payload_type, exc)) from None
        object.__setattr__(self, "adapter", adapter)

    @classmethod
    def from_function(
        cls,
        func: JobHandler,
        worker: str | None = None,
        *,
        concurrency: int = 1,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout_s: float | None = None,
        lease_s: float = 30.0,
        retention_s: float | None = None,
        priority_levels: int = 3,
        queue: str | None = None,
        payload_type: Any = None,
        extra: ParamMatcher | None = None,
    ) -> JobWorkerSpec:
        """Build a spec from a handler's signature (``worker`` defaults to the function's name).

        ``extra`` recognises the parameter that receives the runner's extra argument (the
        service passes one matching ``ctx: Context``).

        Raises:
            ConfigurationError: the handler is not ``async``, its signature does not fit, a
                type hint cannot be resolved, or a policy value is out of range; the message
                names the function.
        """
        name = _qualname(func)
        if not callable(func):
            raise ConfigurationError(f"job worker {name}: expected a function, got {type(func).__name__}")
        roles = _inspect_signature(func, name, extra)
        return cls(
            func=func,
            worker=worker if worker is not None else getattr(func, "__name__", ""),
            payload_type=payload_type if payload_type is not None else roles.payload_type,
            payload_param=roles.payload,
            context_param=roles.context,
            extra_param=roles.extra,
            queue=queue,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout_s=timeout_s,
            lease_s=lease_s,
            retention_s=retention_s,
            priority_levels=priority_levels,
            qualname=name,
            positional=tuple(name for name in roles.positional if name),
        )

    def validate_payload(self, raw: Any) -> Any:
        """The payload as the handler's type (raises pydantic's ``ValidationError``)."""
        return self.adapter.validate_python(raw)

    def invoke(self, payload: Any, context: JobContext, extra: Any = None) -> Awaitable[Any]:
        """Call the handler with what it asks for: the payload, the context, the extra argument."""
        values: dict[str, Any] = {}
        if self.payload_param is not None:
            values[self.payload_param] = payload
        if self.context_param is not None:
            values[self.context_param] = context
        if self.extra_param is not None:
            values[self.extra_param] = extra
        if not self.positional:
            return self.func(**values)
        args = [values.pop(name) for name in self.positional]
        return self.func(*args, **values)


def _inspect_signature(func: JobHandler, name: str, extra: ParamMatcher | None) -> _Roles:
    """Which parameter of ``func`` is the payload, the JobContext and the extra (service) context."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"job worker {name}: cannot read its signature: {exc}") from exc
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # NameError for unresolvable forward references, and friends
        raise ConfigurationError(
            f"job worker {name}: cannot resolve its type hints ({exc}); define the payload type at module level"
        ) from exc
    roles = _Roles()
    for param in signature.parameters.values():
        annotation = hints.get(param.name, inspect.Parameter.empty)
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if param.name == "job" or annotation is JobContext:
            role = "context"
        elif extra is not None and extra(param.name, annotation):
            role = "extra"
        elif roles.payload is None and param.default is inspect.Parameter.empty:
            role = "payload"
        elif param.default is not inspect.Parameter.empty:
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                roles.positional.append("")  # a gap: a later positional-only role could not be passed
            continue  # an optional parameter the caller leaves at its default
        else:
            raise ConfigurationError(
                f"job worker {name}: parameter {param.name!r} has no default; a handler takes the payload "
                "and optionally `job: JobContext` (and `ctx: Context` under a service), in any order"
            )
        if getattr(roles, role) is not None:
            raise ConfigurationError(f"job worker {name}: more than one {role} parameter ({param.name!r})")
        setattr(roles, role, param.name)
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            if "" in roles.positional:
                raise ConfigurationError(f"job worker {name}: {param.name!r} follows an optional positional-only one")
            roles.positional.append(param.name)
        if role == "payload":
            roles.payload_type = annotation if annotation is not inspect.Parameter.empty else Any
    return roles


@dataclass(slots=True)
class _Roles:
    """The parameters a handler declared, by role (see :func:`_inspect_signature`)."""

    payload: str | None = None
    context: str | None = None
    extra: str | None = None
    payload_type: Any = Any
    positional: list[str] = field(default_factory=list)
