"""The dashboard's ASGI application: :func:`create_app` (Starlette; routes, auth, live feed).

Routes (every one behind the token when one is set; the JSON API is documented in
``docs/dashboard.md``)::

    GET  /                                     the page (static HTML/JS/CSS from this package)
    GET  /api/overview                         services, beings, agents, queues, streams, problems
    GET  /api/queues/{queue}/jobs              one page of jobs: ?state=&worker=&q=&offset=&limit=
    GET  /api/queues/{queue}/jobs/{id}         a job's full record and the events seen for it
    POST /api/queues/{queue}/jobs/{id}/{action}  cancel | retry | purge (only with allow_actions)
    GET  /api/events                           buffered events: ?after=SEQ&subject=TEXT
    GET  /api/live                             server-sent events: "overview" and "events"
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from shipkit.dashboard.hub import Hub
from shipkit.dashboard.job_index import STATES, JobFilter
from shipkit.dashboard.queues import QueueView
from shipkit.dashboard.settings import DashboardSettings
from shipkit.errors import InvalidNameError, JetStreamError, JobStateError, KeyNotFoundError, ShipkitError

__all__ = ["create_app"]

COOKIE = "shipkit_dashboard"
LIVE_MIN_GAP_S = 0.5  # at most two overview pushes a second, however busy the system is
LIVE_KEEPALIVE_S = 15.0
ACTIONS = ("cancel", "retry", "purge")
STATIC = files("shipkit.dashboard") / "static"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_arg(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidNameError(f"query parameter {name}={raw!r} is not an integer") from None


class TokenMiddleware(BaseHTTPMiddleware):
    """Refuse every request without the token (header, cookie, or ``?token=`` which sets the cookie)."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self._token = token

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token.encode())

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if self._matches(bearer) or self._matches(request.cookies.get(COOKIE)):
            return await call_next(request)
        if self._matches(request.query_params.get("token")):
            response = await call_next(request)
            response.set_cookie(COOKIE, self._token, httponly=True, samesite="strict")
            return response
        if request.url.path.startswith("/api/"):
            return _error(401, "this dashboard needs its token: Authorization: Bearer TOKEN")
        return Response("401: open this page as /?token=TOKEN", status_code=401, media_type="text/plain")


class Routes:
    """The request handlers, over one :class:`Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def _queue(self, request: Request) -> QueueView:
        name = request.path_params["queue"]
        queue = self.hub.queues.get(name)
        if queue is None:
            raise KeyNotFoundError(f"no job queue {name!r} (known: {', '.join(sorted(self.hub.queues)) or 'none'})")
        return queue

    async def index(self, request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    async def overview(self, request: Request) -> Response:
        return JSONResponse(self.hub.overview())

    async def jobs(self, request: Request) -> Response:
        queue = self._queue(request)
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            raise InvalidNameError(f"state={state!r} is not one of {'|'.join(STATES)}")
        wanted = JobFilter(state, request.query_params.get("worker") or None, request.query_params.get("q") or None)
        page = queue.index.page(wanted, _int_arg(request, "offset", 0), _int_arg(request, "limit", 50))
        return JSONResponse({**page, "version": queue.index.version})

    async def job(self, request: Request) -> Response:
        found = await self._queue(request).job(request.path_params["job_id"])
        if found is None:
            raise KeyNotFoundError(f"no job {request.path_params['job_id']!r}")
        return JSONResponse(found)

    async def act(self, request: Request) -> Response:
        if not self.hub.settings.allow_actions:
            return _error(403, "actions are off: start the dashboard with --allow-actions")
        action = request.path_params["action"]
        if action not in ACTIONS:
            return _error(404, f"unknown action {action!r} (cancel, retry or purge)")
        outcome = await self._queue(request).act(action, request.path_params["job_id"])
        return JSONResponse(outcome)

    async def events(self, request: Request) -> Response:
        found = self.hub.events.since(_int_arg(request, "after", 0), request.query_params.get("subject", ""))
        return JSONResponse({"last_seq": self.hub.events.last_seq, "events": found})

    async def live(self, request: Request) -> Response:
        return StreamingResponse(
            self._feed(request), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def _feed(self, request: Request) -> AsyncIterator[str]:
        # Each client gets the whole overview when something changed, and only the events it has
        # not seen; a quiet system sends a comment now and then so proxies keep the stream open.
        seen = _int_arg(request, "after", self.hub.events.last_seq)
        while not await request.is_disconnected():
            yield f"event: overview\ndata: {json.dumps(self.hub.overview())}\n\n"
            fresh = self.hub.events.since(seen)
            if fresh:
                seen = fresh[-1]["seq"]
                yield f"event: events\ndata: {json.dumps(fresh)}\n\n"
            self.hub.changed.clear()
            await asyncio.sleep(LIVE_MIN_GAP_S)  # a rate limit, not a synchronisation: the event below wakes us
            try:
                await asyncio.wait_for(self.hub.changed.wait(), LIVE_KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"


async def _shipkit_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, KeyNotFoundError):
        return _error(404, str(exc))
    if isinstance(exc, InvalidNameError):
        return _error(400, str(exc))
    if isinstance(exc, JobStateError):
        return _error(409, str(exc))
    if isinstance(exc, JetStreamError | ShipkitError):
        return _error(502, str(exc))
    raise exc


def create_app(settings: DashboardSettings, hub: Hub | None = None) -> Starlette:
    """The dashboard as an ASGI app.

    Without ``hub``, the app's lifespan starts its own (connects to NATS, starts the refresh
    loops) and stops it; a ``hub`` passed in is started and stopped by the caller.
    """
    owned = hub is None
    hub = hub or Hub(settings)
    routes = Routes(hub)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned:
            await hub.start()
        try:
            yield
        finally:
            if owned:
                await hub.stop()

    middleware = [Middleware(TokenMiddleware, token=settings.token.get_secret_value())] if settings.token else []
    app = Starlette(
        routes=[
            Route("/", routes.index),
            Route("/api/overview", routes.overview),
            Route("/api/queues/{queue}/jobs", routes.jobs),
            Route("/api/queues/{queue}/jobs/{job_id}", routes.job),
            Route("/api/queues/{queue}/jobs/{job_id}/{action}", routes.act, methods=["POST"]),
            Route("/api/events", routes.events),
            Route("/api/live", routes.live),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ShipkitError: _shipkit_error},
    )
    app.state.hub = hub
    return app
