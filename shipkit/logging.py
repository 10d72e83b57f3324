"""structlog configuration, applied once at the edge (``shipkit run`` / :func:`shipkit.run`).

Library code calls :func:`get_logger` (a thin wrapper over ``structlog.get_logger``); this
module decides how lines look:

- configured (:func:`configure_logging`, or the application's own ``structlog.configure``):
  console output on a TTY, JSON lines otherwise; colours only when stderr is a terminal;
- never configured (a plain script using shipkit as a library): nothing on stdout, warnings
  and errors on stderr as plain text, so ``python client.py | jq`` keeps working.

Tracebacks are rendered without frame locals in every format: a local holding a password or
an API key must never reach a log shipper.

Level scheme (one for the whole library): ``debug`` per message and connection details;
``info`` lifecycle (started, provisioned, stopped) and each finished unit of work; ``warning``
something went wrong but will be retried or recovered (a failed job attempt with retries left,
drift, a reconnect); ``error`` work is lost or final (a handler failure, a dead or failed job,
a shutdown step failing).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

__all__ = ["LogFormat", "configure_logging", "get_logger"]

LogFormat = Literal["console", "json", "auto"]


class _StderrLogger:
    """A structlog output that writes to whatever ``sys.stderr`` is *now* (pytest swaps it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _plain_traceback_renderer() -> structlog.typing.Processor:
    return structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


_UNCONFIGURED: Any = structlog.wrap_logger(
    _StderrLogger(),
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
    ],
    cache_logger_on_first_use=True,
)


class _LibraryLogger:
    """Resolves to the application's structlog config when there is one, else the quiet stderr default."""

    __slots__ = ("_configured",)

    def __init__(self, name: str) -> None:
        self._configured = structlog.get_logger(name)

    def __getattr__(self, attr: str) -> Any:
        target = self._configured if structlog.is_configured() else _UNCONFIGURED
        return getattr(target, attr)


def get_logger(name: str) -> Any:
    """The logger library modules use (``log = get_logger(__name__)``); see the module docstring."""
    return _LibraryLogger(name)


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger) for a process running a service.

    Args:
        level: ``debug``, ``info``, ``warning``, ``error``.
        fmt: ``console`` (for humans; coloured only on a terminal), ``json`` (one object per
            line), or ``auto`` (console on a TTY, JSON otherwise).
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    tty = sys.stderr.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        # structlog's default dict_tracebacks records every frame's locals: never for us.
        processors += [_plain_traceback_renderer(), structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per record, newline included (print() writes the newline separately): processes
        # sharing stderr (``shipkit run --workers N``) then never interleave inside a line.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
