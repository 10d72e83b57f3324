"""What every ``shipkit`` command shares: exit codes, the startup-failure line, loading a service."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import structlog

from shipkit.errors import ImportFromStringError, ShipkitError
from shipkit.service.importer import load_service

if TYPE_CHECKING:
    from shipkit.service.app import Service

__all__ = [
    "EXIT_SERVER_DIED",
    "EXIT_STARTUP_FAILURE",
    "EXIT_USAGE",
    "app_dir_option",
    "format_table",
    "load_service_or_exit",
    "quiet_library_logs",
    "startup_failure",
    "target_argument",
]

EXIT_SERVER_DIED = 1
"""``shipkit server``: the server process died while running."""
EXIT_USAGE = 2
"""A bad option, unknown template, or a file ``new`` would overwrite (click's own usage code)."""
EXIT_STARTUP_FAILURE = 3
"""The service cannot be imported, the server is unreachable, a stream is missing under ``--verify`` ..."""


def quiet_library_logs() -> None:
    """Unless logging is configured already: the library's warnings and errors only, on stderr.

    For commands whose stdout is their answer (tables, JSON, an agent's reply). One write per
    record, as :func:`shipkit.logging.configure_logging` does.
    """
    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        )


def startup_failure(exc: BaseException, *, show_traceback: bool) -> NoReturn:
    """One clear line on stderr (plus the traceback when asked for, or for a non-shipkit error), exit 3."""
    if show_traceback or not isinstance(exc, ShipkitError):
        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc) if isinstance(exc, ShipkitError) else f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if isinstance(exc, ImportFromStringError) and cause and not isinstance(cause, ImportError) and not show_traceback:
        message += " [--log-level debug shows the traceback]"
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_STARTUP_FAILURE)


def load_service_or_exit(target: str, app_dir: Path | None, *, show_traceback: bool) -> Service:
    try:
        return load_service(target, app_dir=app_dir)
    except ShipkitError as exc:
        startup_failure(exc, show_traceback=show_traceback)


target_argument = click.argument("target", metavar="MODULE[:ATTR]")
app_dir_option = click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory put first on sys.path to import MODULE from.  [default: the current directory]",
)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns under upper-case headers, two spaces apart (what every list command prints)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
