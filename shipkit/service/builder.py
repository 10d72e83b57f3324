"""The seed's request-reply builder, :class:`NatsServiceBuilder`, and its CLI args, :class:`ServiceArgs`.

A thin facade over :class:`~shipkit.service.app.Service` with noesis-ship's byte-level behaviour (wire
contract §3): subscribe ``{prefix}.>``, named handler -> default handler (full subject) ->
``{"error":"UNKNOWN_COMMAND: <cmd>","code":404}``; the reply is the handler's bytes unchanged;
mutation events go to ``{event_prefix}.{event_type}`` as a ``ShipEvent`` through JetStream when an
event stream is configured, else as the raw payload over core NATS::

    board = Board()                              # shared by every handler, like the seed's Arc<State>
    await (
        NatsServiceBuilder("kanban.cmd", board)  # requests on kanban.cmd.{command}
        .nats_url("nats://localhost:4222")
        .handler("list", list_items)             # async (payload) -> bytes
        .handler("create", create)               # async (payload, state) -> bytes
        .default_handler(dispatch)               # async (subject, payload[, state]) -> bytes
        .mutation_callback(to_event)             # (command, response) -> (event_type, payload) | None
        .event_prefix("kanban.events")
        .event_bus_stream(StreamConfig.new("KANBAN_EVENTS", "kanban.events.>"))
        .on_shutdown(save_state)                 # async () or async (state)
        .run()
    )

The prefix is a subject, not a NATS micro name: ``kanban.cmd`` serves ``kanban.cmd.>`` and shows in
``nats micro ls`` as ``kanban-cmd`` (see :func:`service_name_for`; override with
:meth:`NatsServiceBuilder.service_name`). Unlike the seed, SIGTERM stops it as cleanly as Ctrl-C, and
handlers may run concurrently.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar, cast, overload

import click

from shipkit._names import validate_service_name, validate_subject
from shipkit.config import DEFAULT_NATS_URL, StreamConfig
from shipkit.errors import ConfigurationError
from shipkit.logging import get_logger
from shipkit.models import ErrorResponse
from shipkit.service.app import Service
from shipkit.service.host import Counts
from shipkit.service.runner import serve

__all__ = [
    "BytesHandler",
    "DefaultHandler",
    "NatsServiceBuilder",
    "SeedMutationCallback",
    "ServiceArgs",
    "ShutdownHook",
    "service_name_for",
]

log = get_logger(__name__)

StateT = TypeVar("StateT")

BytesHandler = Callable[[bytes], Awaitable[bytes]] | Callable[[bytes, StateT], Awaitable[bytes]]
"""A seed handler: ``async (payload)`` or ``async (payload, state)`` -> reply bytes."""
DefaultHandler = Callable[[str, bytes], Awaitable[bytes]] | Callable[[str, bytes, StateT], Awaitable[bytes]]
"""The seed's catch-all: ``async (full subject, payload)`` or ``async (subject, payload, state)`` -> bytes."""
ShutdownHook = Callable[[], Awaitable[None]] | Callable[[StateT], Awaitable[None]]
"""Run at shutdown: ``async ()`` or ``async (state)``."""
SeedMutationCallback = Callable[[str, Any], "tuple[str, Any] | None"]
"""``(command, response bytes) -> (event_type, event payload) | None``; a plain function."""

# The call shapes each registration accepts, by positional parameter names (shown in errors).
_HANDLER_SHAPES = (("payload",), ("payload", "state"))
_DEFAULT_SHAPES = (("subject", "payload"), ("subject", "payload", "state"))
_SHUTDOWN_SHAPES = ((), ("state",))
_MUTATION_SHAPES = (("command", "response"),)
_NOT_IN_SERVICE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def service_name_for(prefix: str) -> str:
    """The NATS micro service name (``[A-Za-z0-9_-]+``) derived from a subject prefix.

    Every character a micro name may not hold becomes ``-``: ``kanban.cmd`` -> ``kanban-cmd``,
    ``ship.kanban.cmd`` -> ``ship-kanban-cmd``; a single-token prefix like ``kanban`` is its own name.
    """
    return _NOT_IN_SERVICE_NAME.sub("-", validate_subject(prefix, "service prefix"))


def _default_event_prefix(prefix: str) -> str:
    """``{prefix}.events`` for one token (as before); a sibling of the commands for a dotted prefix.

    ``kanban.cmd`` -> ``kanban.events``: under ``kanban.cmd.events`` the service's own ``{prefix}.>``
    subscription would take its events as requests (and hand them to the default handler).
    """
    parent, dot, _ = prefix.rpartition(".")
    return f"{parent}.events" if dot else f"{prefix}.events"


def _qualname(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", repr(func)))


def _shape(names: tuple[str, ...]) -> str:
    return f"({', '.join(names)})"


def _positional_arity(func: Callable[..., Any], what: str, shapes: tuple[tuple[str, ...], ...]) -> int:
    """How many positional parameters ``func`` takes, refused unless it is one of ``shapes``.

    Raises:
        ConfigurationError: ``func`` takes ``*args``, a keyword-only parameter without a default,
            or a number of positional parameters no shape has; the message names it and the shapes.
    """
    qualname = _qualname(func)
    expected = " or ".join(_shape(names) for names in shapes)
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:  # a builtin or C callable: nothing to count
        raise ConfigurationError(
            f"{what} {qualname}: cannot read its signature ({exc}); it must take {expected}"
        ) from exc
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            raise ConfigurationError(f"{what} {qualname}: *{param.name} is not supported; it must take {expected}")
        if param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            raise ConfigurationError(f"{what} {qualname}: keyword-only parameter {param.name!r} needs a default")
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) not in {len(names) for names in shapes}:
        raise ConfigurationError(
            f"{what} {qualname} takes {len(positional)} positional parameter{'' if len(positional) == 1 else 's'} "
            f"{_shape(tuple(positional))}; "
            f"it must take {expected}"
        )
    return len(positional)


def _check_async(func: Callable[..., Any], what: str) -> None:
    if not inspect.iscoroutinefunction(func):
        raise ConfigurationError(f"{what} {_qualname(func)} must be an `async def` function")


def _state_args(
    func: Callable[..., Any], what: str, shapes: tuple[tuple[str, ...], ...], state: object
) -> tuple[object, ...]:
    """The trailing arguments to call ``func`` with: ``(state,)`` for its stateful shape, else none."""
    _check_async(func, what)
    return (state,) if _positional_arity(func, what, shapes) == len(shapes[-1]) else ()


def _named_like(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give ``wrapper`` the name and docstring of ``func`` (for logs, errors and discovery).

    Not ``functools.wraps``: its ``__wrapped__`` would make ``inspect.signature`` report ``func``'s
    own parameters, and the service would reject the ``(payload, state)`` shape as two payloads.
    """
    wrapper.__qualname__ = _qualname(func)
    wrapper.__name__ = str(getattr(func, "__name__", "handler"))
    wrapper.__doc__ = getattr(func, "__doc__", None)


def _adapt_handler(func: BytesHandler[StateT], state: StateT) -> Callable[[bytes], Coroutine[Any, Any, bytes]]:
    """``func`` as ``async (payload: bytes) -> bytes``, with the state bound when it takes one."""
    extra = _state_args(func, "handler", _HANDLER_SHAPES, state)
    call = cast(Callable[..., Awaitable[bytes]], func)  # the arity was checked just above

    async def handle(payload: bytes) -> bytes:
        return await call(payload, *extra)

    _named_like(handle, func)
    return handle


def _adapt_default(func: DefaultHandler[StateT], state: StateT) -> Callable[[str, bytes], Coroutine[Any, Any, bytes]]:
    """``func`` as ``async (subject: str, payload: bytes) -> bytes``, with the state bound when it takes one."""
    extra = _state_args(func, "default handler", _DEFAULT_SHAPES, state)
    call = cast(Callable[..., Awaitable[bytes]], func)

    async def handle(subject: str, payload: bytes) -> bytes:
        return await call(subject, payload, *extra)

    _named_like(handle, func)
    return handle


def _adapt_shutdown(func: ShutdownHook[StateT], state: StateT) -> Callable[[], Coroutine[Any, Any, None]]:
    """``func`` as ``async () -> None``: the runtime would pass a ``Context`` to a hook with a parameter."""
    extra = _state_args(func, "shutdown hook", _SHUTDOWN_SHAPES, state)
    call = cast(Callable[..., Awaitable[None]], func)

    async def hook() -> None:
        await call(*extra)

    _named_like(hook, func)
    return hook


class NatsServiceBuilder(Generic[StateT]):
    """Build and run a request-reply service the noesis-ship way (see the module docstring).

    Args:
        prefix: the subject prefix: requests arrive on ``{prefix}.{command}`` (one subscription on
            ``{prefix}.>``). Dotted prefixes are fine (``kanban.cmd``); the discovery name is
            derived from it (:func:`service_name_for`).
        state: the object handed to every handler, default handler and shutdown hook that takes a
            ``state`` parameter -- the same object each time (the seed's ``Arc<State>``), so
            mutations are shared. Omitted: ``None``.

    Raises:
        InvalidNameError: the prefix is not a subject without wildcards (empty token, space, ``*``, ``>``).
    """

    @overload
    def __init__(self: NatsServiceBuilder[None], prefix: str) -> None: ...

    @overload
    def __init__(self, prefix: str, state: StateT) -> None: ...

    def __init__(self, prefix: str, state: Any = None) -> None:
        self._prefix = validate_subject(prefix, "service prefix")
        self._state: StateT = state
        self._name = service_name_for(prefix)
        self._url: str | None = None
        self._handlers: dict[str, Callable[[bytes], Coroutine[Any, Any, bytes]]] = {}
        self._default: Callable[[str, bytes], Coroutine[Any, Any, bytes]] | None = None
        self._mutation: SeedMutationCallback | None = None
        self._event_prefix: str | None = None
        self._stream: StreamConfig | None = None
        self._shutdown: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def __repr__(self) -> str:
        return f"NatsServiceBuilder({self._prefix!r}, service_name={self._name!r})"

    @property
    def prefix(self) -> str:
        """The subject prefix requests arrive under."""
        return self._prefix

    @property
    def state(self) -> StateT:
        """The shared state object handlers receive."""
        return self._state

    def service_name(self, name: str) -> Self:
        """Show the service as ``name`` in discovery (``$SRV.*.{name}``) instead of the derived one."""
        self._name = validate_service_name(name)
        return self

    def nats_url(self, url: str) -> Self:
        """The server URL (default: ``SHIPKIT_NATS_URL`` / ``NATS_URL`` / localhost:4222)."""
        self._url = url
        return self

    def handler(self, command: str, func: BytesHandler[StateT]) -> Self:
        """Answer ``{prefix}.{command}`` with ``await func(payload)`` or ``await func(payload, state)``.

        Raises:
            ConfigurationError: the command has a handler already or is not a subject, or ``func``
                is not ``async def`` taking ``(payload)`` or ``(payload, state)``.
        """
        validate_subject(command, f"command of {_qualname(func)}")
        if command in self._handlers:
            raise ConfigurationError(f"command {command!r} has a handler already")
        self._handlers[command] = _adapt_handler(func, self._state)
        return self

    def default_handler(self, func: DefaultHandler[StateT]) -> Self:
        """Answer every other command with ``await func(subject, payload)`` (or ``(subject, payload, state)``)."""
        if self._default is not None:
            raise ConfigurationError(f"the builder for {self._prefix!r} has a default handler already")
        self._default = _adapt_default(func, self._state)
        return self

    def mutation_callback(self, func: SeedMutationCallback) -> Self:
        """Map ``(command, response)`` of each successful request to ``(event_type, payload)`` or None.

        The callback is a plain function: the runtime uses its result as soon as the reply is ready.
        """
        if inspect.iscoroutinefunction(func):
            raise ConfigurationError(f"mutation callback {_qualname(func)} must be a plain function, not `async def`")
        _positional_arity(func, "mutation callback", _MUTATION_SHAPES)
        self._mutation = func
        return self

    def event_prefix(self, prefix: str) -> Self:
        """Where mutation events go: ``{prefix}.{event_type}``.

        Default: ``{prefix}.events`` for a one-token service prefix (``kanban`` -> ``kanban.events``),
        the sibling ``.events`` subject for a dotted one (``kanban.cmd`` -> ``kanban.events``).
        """
        self._event_prefix = validate_subject(prefix, "event prefix")
        return self

    def event_bus_stream(self, stream: StreamConfig) -> Self:
        """Publish mutation events as ``ShipEvent`` through JetStream on this stream."""
        self._stream = stream
        return self

    def on_shutdown(self, func: ShutdownHook[StateT]) -> Self:
        """Run ``await func()`` or ``await func(state)`` at shutdown, after in-flight requests finished."""
        self._shutdown.append(_adapt_shutdown(func, self._state))
        return self

    def build(self) -> Service:
        """The :class:`Service` this builder describes (serve it: :meth:`run`, ``shipkit run app:builder.build``)."""
        event_prefix = self._event_prefix or _default_event_prefix(self._prefix)
        if self._default is not None and f"{event_prefix}.".startswith(f"{self._prefix}."):
            # Allowed, as in the seed, but each event would also reach the default handler.
            log.warning("builder.event_prefix_overlaps", prefix=self._prefix, event_prefix=event_prefix)
        service = Service(
            self._name,
            prefix=self._prefix,
            event_prefix=event_prefix,
            event_stream=self._stream,
            queue_group=None,  # the seed uses no queue group: every instance answers
            mutation_transport="jetstream" if self._stream is not None else "core",
        )
        for command, func in self._handlers.items():
            service.add_handler(command, func)
        if self._default is not None:
            service.add_default_handler(self._default)
        if self._mutation is not None:
            service.mutation_callback(self._mutation)
        for hook in self._shutdown:
            service.on_shutdown(hook)
        return service

    async def dispatch(self, subject: str, payload: bytes) -> bytes:
        """Route one request in-process exactly as the running service would (for tests and tools)."""
        command = subject.removeprefix(f"{self._prefix}.")
        func = self._handlers.get(command)
        if func is not None:
            return await func(payload)
        if self._default is not None:
            return await self._default(subject, payload)
        return ErrorResponse(error=f"UNKNOWN_COMMAND: {command}", code=404).to_json()

    async def run(self, **options: Any) -> Counts:
        """Connect and serve until SIGINT/SIGTERM; see :func:`shipkit.service.runner.serve` for options."""
        return await serve(self.build(), nats_url=options.pop("nats_url", self._url), **options)


@dataclass(frozen=True)
class ServiceArgs:
    """The seed's standard service arguments: ``--data-dir`` (default ``.``) and ``--nats-url``.

    Use :meth:`parse` in a script, or :meth:`options` to add both to a click command::

        args = ServiceArgs.parse()            # reads sys.argv
        args.data_dir, args.nats_url
    """

    data_dir: Path = Path(".")
    nats_url: str = DEFAULT_NATS_URL

    @staticmethod
    def options(func: Callable[..., Any]) -> Callable[..., Any]:
        """Click decorator adding ``--data-dir`` and ``--nats-url`` (env ``SHIPKIT_NATS_URL``/``NATS_URL``)."""
        func = click.option(
            "--nats-url",
            default=DEFAULT_NATS_URL,
            envvar=["SHIPKIT_NATS_URL", "NATS_URL"],
            show_default=True,
            help="NATS server URL.",
        )(func)
        return click.option(
            "--data-dir",
            default=".",
            type=click.Path(file_okay=False, path_type=Path),
            show_default=True,
            help="Directory for the service's local data.",
        )(func)

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> ServiceArgs:
        """Parse ``argv`` (default ``sys.argv[1:]``); ``--help`` prints usage and exits."""

        @click.command(context_settings={"ignore_unknown_options": False})
        @cls.options
        def command(data_dir: Path, nats_url: str) -> ServiceArgs:
            return cls(data_dir=data_dir, nats_url=nats_url)

        result = command.main(args=list(argv if argv is not None else sys.argv[1:]), standalone_mode=False)
        if not isinstance(result, ServiceArgs):  # --help was shown
            raise SystemExit(0)
        return result
