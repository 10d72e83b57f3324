"""The seed's request-reply builder, :class:`NatsServiceBuilder`, and its CLI args, :class:`ServiceArgs`.

A thin facade over :class:`~shipkit.service.app.Service` with noesis-ship's byte-level behaviour (wire
contract §3): subscribe ``{prefix}.>``, named handler -> default handler (full subject) ->
``{"error":"UNKNOWN_COMMAND: <cmd>","code":404}``; the reply is the handler's bytes unchanged;
mutation events go to ``{event_prefix}.{event_type}`` as a ``ShipEvent`` through JetStream when an
event stream is configured, else as the raw payload over core NATS::

    await (
        NatsServiceBuilder("kanban")
        .nats_url("nats://localhost:4222")
        .handler("list", list_items)           # async (payload: bytes) -> bytes
        .default_handler(dispatch)             # async (subject: str, payload: bytes) -> bytes
        .mutation_callback(to_event)           # (command, response_bytes) -> (event_type, payload) | None
        .event_prefix("kanban.events")
        .event_bus_stream(StreamConfig.new("KANBAN_EVENTS", "kanban.events.>"))
        .on_shutdown(save_state)
        .run()
    )

Unlike the seed, SIGTERM stops it as cleanly as Ctrl-C, and handlers may run concurrently.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import click

from shipkit._names import validate_subject
from shipkit.config import DEFAULT_NATS_URL, StreamConfig
from shipkit.errors import ConfigurationError
from shipkit.models import ErrorResponse
from shipkit.service.app import Service
from shipkit.service.host import Counts

__all__ = ["BytesHandler", "DefaultHandler", "NatsServiceBuilder", "ServiceArgs"]

BytesHandler = Callable[[bytes], Coroutine[Any, Any, bytes]]
"""A seed handler: request bytes in, reply bytes out."""
DefaultHandler = Callable[[str, bytes], Coroutine[Any, Any, bytes]]
"""The seed's catch-all: (full subject, request bytes) -> reply bytes."""
SeedMutationCallback = Callable[[str, Any], "tuple[str, Any] | None"]
"""(command, response bytes) -> (event_type, event payload) | None."""


class NatsServiceBuilder:
    """Build and run a request-reply service the noesis-ship way (see the module docstring).

    Args:
        name: the service name; also the subject prefix (``{name}.>``).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._url: str | None = None
        self._handlers: dict[str, BytesHandler] = {}
        self._default: DefaultHandler | None = None
        self._mutation: SeedMutationCallback | None = None
        self._event_prefix: str | None = None
        self._stream: StreamConfig | None = None
        self._shutdown: list[Callable[[], Awaitable[None]]] = []

    def nats_url(self, url: str) -> Self:
        """The server URL (default: ``SHIPKIT_NATS_URL`` / ``NATS_URL`` / localhost:4222)."""
        self._url = url
        return self

    def handler(self, command: str, func: BytesHandler) -> Self:
        """Answer ``{name}.{command}`` with ``await func(payload)``."""
        validate_subject(command, "command")
        if command in self._handlers:
            raise ConfigurationError(f"command {command!r} has a handler already")
        self._handlers[command] = func
        return self

    def default_handler(self, func: DefaultHandler) -> Self:
        """Answer every other command with ``await func(subject, payload)``."""
        self._default = func
        return self

    def mutation_callback(self, func: SeedMutationCallback) -> Self:
        """Map ``(command, response)`` of each successful request to ``(event_type, payload)`` or None."""
        self._mutation = func
        return self

    def event_prefix(self, prefix: str) -> Self:
        """Where mutation events go: ``{prefix}.{event_type}`` (default ``{name}.events``)."""
        self._event_prefix = validate_subject(prefix, "event prefix")
        return self

    def event_bus_stream(self, stream: StreamConfig) -> Self:
        """Publish mutation events as ``ShipEvent`` through JetStream on this stream."""
        self._stream = stream
        return self

    def on_shutdown(self, func: Callable[[], Awaitable[None]]) -> Self:
        """Run ``await func()`` at shutdown, after in-flight requests finished."""
        self._shutdown.append(func)
        return self

    def build(self) -> Service:
        """The :class:`Service` this builder describes (run it with ``shipkit run`` or :meth:`run`)."""
        service = Service(
            self._name,
            prefix=self._name,
            event_prefix=self._event_prefix or f"{self._name}.events",
            event_stream=self._stream,
            queue_group=None,  # the seed uses no queue group: every instance answers
            mutation_transport="jetstream" if self._stream is not None else "core",
        )
        for command, func in self._handlers.items():
            service.add_handler(command, _bytes_handler(func))
        if self._default is not None:
            service.add_default_handler(self._default)
        if self._mutation is not None:
            service.mutation_callback(self._mutation)
        for hook in self._shutdown:
            service.on_shutdown(hook)
        return service

    async def dispatch(self, subject: str, payload: bytes) -> bytes:
        """Route one request in-process exactly as the running service would (for tests and tools)."""
        command = subject[len(self._name) + 1 :] if subject.startswith(f"{self._name}.") else subject
        func = self._handlers.get(command)
        if func is not None:
            return await func(payload)
        if self._default is not None:
            return await self._default(subject, payload)
        return ErrorResponse(error=f"UNKNOWN_COMMAND: {command}", code=404).to_json()

    async def run(self, **options: Any) -> Counts:
        """Connect and serve until SIGINT/SIGTERM; see :func:`shipkit.service.runner.serve` for options."""
        from shipkit.service.runner import serve

        return await serve(self.build(), nats_url=self._url, **options)


def _bytes_handler(func: BytesHandler) -> Callable[[bytes], Coroutine[Any, Any, bytes]]:
    """Give a seed handler an explicit ``bytes`` signature, whatever its own annotations say."""

    async def handle(payload: bytes) -> bytes:
        return await func(payload)

    handle.__qualname__ = getattr(func, "__qualname__", "handler")
    return handle


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
