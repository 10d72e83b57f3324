"""``/healthz``, ``/readyz`` and ``/metrics`` over HTTP for orchestrators: :class:`HealthServer`.

A deliberately small HTTP/1.1 server on asyncio (GET only, one request per connection), so health
checks need no extra dependency and run on the service's own event loop:

- ``/healthz``: 200 while the process runs (liveness);
- ``/readyz``: 200 when every readiness check passes (connected, provisioned and started, not
  shutting down), else 503; the body lists the checks as JSON;
- ``/metrics``: the Prometheus exposition text, when metrics are on (else 404).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from shipkit.errors import ConfigurationError
from shipkit.logging import get_logger

__all__ = ["HealthServer", "ReadinessCheck"]

log = get_logger("shipkit.health")

ReadinessCheck = Callable[[], dict[str, bool]]
"""``() -> {check: passed}``: what ``/readyz`` reports."""

_READ_TIMEOUT_S = 5.0  # a client that sends nothing is dropped, never held open
_MAX_HEADER_BYTES = 16 * 1024


class HealthServer:
    """Serves health, readiness and metrics on ``host:port`` (port 0 picks a free one).

    Args:
        host: the interface to bind.
        port: the TCP port.
        readiness: the readiness checks.
        metrics: ``async () -> (content_type, body)`` for ``/metrics`` (None: 404).
    """

    def __init__(
        self,
        host: str,
        port: int,
        readiness: ReadinessCheck,
        metrics: Callable[[], Awaitable[tuple[str, bytes]]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and start serving; ``port`` becomes the bound port.

        Raises:
            ConfigurationError: the address cannot be bound (in use, or not an interface here).
        """
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigurationError(f"metrics/health server cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health.listening", url=f"http://{self.host}:{self.port}", metrics=self._metrics is not None)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            status, content_type, body = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        except Exception as exc:  # a failing metrics read: answer 500 and say why in the log
            log.error("health.request_failed", exc_info=exc)
            status, content_type, body = 500, "text/plain", f"{type(exc).__name__}\n".encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
        writer.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the client went away before reading the answer: nothing to tell it
        finally:
            writer.close()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        if len(head) > _MAX_HEADER_BYTES:
            return 400, "text/plain", b"request too large\n"
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request line\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}\n'
        if path == "/readyz":
            checks = self._readiness()
            ready = all(checks.values())
            body = json.dumps({"status": "ready" if ready else "not ready", "checks": checks}).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        if path == "/metrics" and self._metrics is not None:
            content_type, body = await self._metrics()
            return 200, content_type, body
        return 404, "text/plain", b"try /healthz, /readyz or /metrics\n"
