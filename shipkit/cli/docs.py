"""``shipkit docs gen`` / ``shipkit docs serve``: a service's AsyncAPI 3.0 document, as a file or a page.

Both only import the service (nothing connects): :func:`shipkit.service.asyncapi.asyncapi_document`
does the work. ``serve`` uses the standard library's HTTP server and a page rendered here, so it needs
no extra and downloads nothing at run time.
"""

from __future__ import annotations

import importlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from shipkit.cli._common import EXIT_USAGE, app_dir_option, load_service_or_exit, startup_failure, target_argument
from shipkit.cli._docs_page import render_page
from shipkit.errors import ShipkitError
from shipkit.service.asyncapi import asyncapi_document

__all__ = ["docs"]


@click.group("docs")
def docs() -> None:
    """Generate or serve the AsyncAPI 3.0 document of a service."""


def _document(target: str, app_dir: Path | None, server_url: str | None) -> dict[str, Any]:
    from shipkit.logging import configure_logging

    configure_logging("warning", "console")  # the imported module's log lines go to stderr, not the output
    service = load_service_or_exit(target, app_dir, show_traceback=False)
    try:
        return asyncapi_document(service, server_url=server_url)
    except ShipkitError as exc:
        startup_failure(exc, show_traceback=False)


def _to_yaml(document: dict[str, Any]) -> str:
    try:
        # Imported by name: PyYAML is optional and ships no type stubs (types-PyYAML is not a dependency).
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        click.echo("Error: --yaml needs PyYAML: pip install pyyaml", err=True)
        sys.exit(EXIT_USAGE)
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text


server_url_option = click.option(
    "--server-url", metavar="URL", default=None, help="A NATS URL to list under `servers` (omitted by default)."
)


@docs.command("gen")
@target_argument
@app_dir_option
@click.option("--yaml", "as_yaml", is_flag=True, help="Write YAML instead of JSON (needs PyYAML).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to FILE instead of stdout."
)
@server_url_option
def gen_command(target: str, app_dir: Path | None, as_yaml: bool, out: Path | None, server_url: str | None) -> None:
    """Write the AsyncAPI 3.0 document of the service MODULE[:ATTR].

    \b
    Examples:
      shipkit docs gen kanban.service:service --out asyncapi.json
      shipkit docs gen app --yaml
    """
    document = _document(target, app_dir, server_url)
    text = _to_yaml(document) if as_yaml else json.dumps(document, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@docs.command("serve")
@target_argument
@app_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8643, show_default=True, help="0 picks a free port.")
@server_url_option
def serve_command(target: str, app_dir: Path | None, host: str, port: int, server_url: str | None) -> None:
    """Serve the AsyncAPI document of MODULE[:ATTR] as a page (and /asyncapi.json) until Ctrl-C."""
    document = _document(target, app_dir, server_url)
    pages = {
        "/": ("text/html; charset=utf-8", render_page(document).encode()),
        "/asyncapi.json": ("application/json", json.dumps(document, indent=2).encode()),
    }
    server = ThreadingHTTPServer((host, port), _handler_for(pages))
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"serving http://{bound_host!s}:{bound_port}/ (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command is meant to end
    finally:
        server.server_close()


def _handler_for(pages: dict[str, tuple[str, bytes]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            content_type, body = pages.get(self.path.split("?", 1)[0], ("text/plain", b""))
            if not body:
                self.send_error(404, f"no page {self.path}; try / or /asyncapi.json")
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per request on stderr is noise for a docs page

    return Handler
