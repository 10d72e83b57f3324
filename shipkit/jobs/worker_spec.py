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

Handler shape: ``async def handler(payload: T, job: JobContext) -> R``. The first parameter's
annotation is the payload type (a pydantic model, a dataclass, ``dict[str, Any]``, ... ; no
annotation means any JSON); a parameter named ``job`` or annotated :class:`JobContext`
receives the context; any other parameter needs a default. The return value (JSON-able)
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
from shipkit.jobs.models import Backoff

__all__ = ["JobHandler", "JobWorkerSpec"]

JobHandler = Callable[..., Awaitable[Any]]


def _qualname(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


@dataclass(frozen=True, slots=True)
class JobWorkerSpec:
    """One job handler and its policies, validated at construction.

    Attributes:
        func: the ``async def`` handler.
        worker: the worker name it serves (a subject token).
        payload_type: the first parameter's annotation (``Any`` when absent).
        context_param: the name of the parameter receiving the :class:`JobContext`, if any.
        concurrency: jobs run at once by one :class:`JobWorker` (>= 1).
        max_attempts: attempts per job unless the job says otherwise (None: the queue's).
        backoff: delays between attempts (None: the queue's).
        timeout_s: per-attempt timeout; the handler is cancelled and the attempt fails.
        lease_s: how long a job stays held without a heartbeat (heartbeats go every third).
        qualname: ``module.function`` for messages.
        adapter: the payload validator, built once.
    """

    func: JobHandler
    worker: str
    payload_type: Any = Any
    context_param: str | None = None
    concurrency: int = 1
    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout_s: float | None = None
    lease_s: float = 30.0
    qualname: str = ""
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)
    _positional_context: bool = field(default=False, repr=False)

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
        payload_type: Any = None,
    ) -> JobWorkerSpec:
        """Build a spec from a handler's signature (``worker`` defaults to the function's name).

        Raises:
            ConfigurationError: the handler is not ``async``, its signature does not fit, a
                type hint cannot be resolved, or a policy value is out of range; the message
                names the function.
        """
        name = _qualname(func)
        if not callable(func):
            raise ConfigurationError(f"job worker {name}: expected a function, got {type(func).__name__}")
        detected_type, context_param, positional = _inspect_signature(func, name)
        return cls(
            func=func,
            worker=worker if worker is not None else getattr(func, "__name__", ""),
            payload_type=payload_type if payload_type is not None else detected_type,
            context_param=context_param,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout_s=timeout_s,
            lease_s=lease_s,
            qualname=name,
            _positional_context=positional,
        )

    def validate_payload(self, raw: Any) -> Any:
        """The payload as the handler's type (raises pydantic's ``ValidationError``)."""
        return self.adapter.validate_python(raw)

    def invoke(self, payload: Any, context: JobContext) -> Awaitable[Any]:
        """Call the handler with the payload and, if it asks for one, the context."""
        if self.context_param is None:
            return self.func(payload)
        if self._positional_context:
            return self.func(payload, context)
        return self.func(payload, **{self.context_param: context})


def _inspect_signature(func: JobHandler, name: str) -> tuple[Any, str | None, bool]:
    """``(payload type, context parameter name, pass context positionally)`` for ``func``."""
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
    params = list(signature.parameters.values())
    positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional_kinds:
        raise ConfigurationError(f"job worker {name}: the first parameter must be the payload (positional)")
    first = params[0]
    if hints.get(first.name) is JobContext:
        raise ConfigurationError(f"job worker {name}: the first parameter must be the payload, not the JobContext")
    context_param: str | None = None
    positional = False
    for param in params[1:]:
        if param.name == "job" or hints.get(param.name) is JobContext:
            if context_param is not None:
                raise ConfigurationError(f"job worker {name}: more than one JobContext parameter")
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise ConfigurationError(f"job worker {name}: the JobContext parameter cannot be *args/**kwargs")
            context_param = param.name
            positional = param.kind is inspect.Parameter.POSITIONAL_ONLY
            if positional and param is not params[1]:
                raise ConfigurationError(f"job worker {name}: a positional-only JobContext must follow the payload")
        elif param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise ConfigurationError(
                f"job worker {name}: parameter {param.name!r} has no default; a handler takes the payload "
                "and optionally `job: JobContext`"
            )
    return hints.get(first.name, Any), context_param, positional
