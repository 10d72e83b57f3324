"""A small fleet and two dashboards (actions on / off) on one server per test module.

Selenium and httpx calls block, so the fleet and the dashboards run on their own event loop in
a background thread; tests hand it coroutines through :meth:`Fleet.run`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from pydantic import BaseModel, SecretStr

from shipkit.config import NatsConfig
from shipkit.connection import ConnectionManager
from shipkit.dashboard import DashboardSettings, Hub, create_app
from shipkit.jobs import JobContext, JobQueue
from shipkit.primitives.eventbus import EventBus
from shipkit.server import NatsServer
from shipkit.service.app import Service
from shipkit.service.client import Client
from shipkit.service.runtime import Runtime

T = TypeVar("T")
TOKEN = "t0ken-for-tests"
WAIT_S = 10.0


class Steps(BaseModel):
    """A job that advances one step each time the test releases one."""

    steps: int


def build_service(gate: asyncio.Queue[None]) -> Service:
    """``shop``: a ``ping`` handler, ``stepper`` (driven by the test) and ``sleeper`` (runs until cancelled)."""
    service = Service("shop", "2.1.0", job_queue="work")

    @service.handler("ping")
    async def ping(_: None = None) -> dict[str, str]:
        return {"pong": "shop"}

    @service.job_worker("stepper")
    async def stepper(job_payload: Steps, job: JobContext) -> dict[str, int]:
        for step in range(1, job_payload.steps + 1):
            await gate.get()
            await job.progress(step / job_payload.steps, f"step {step}")
        return {"steps": job_payload.steps}

    @service.job_worker("sleeper")
    async def sleeper(job_payload: Steps, job: JobContext) -> None:
        await asyncio.Event().wait()  # runs until cancelled

    return service


class Fleet:
    """The background loop with the service, a job queue, an event bus and the dashboards on it."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dashboard-fleet", daemon=True)
        self.urls: dict[str, str] = {}
        self.hubs: dict[str, Hub] = {}
        self._servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = WAIT_S) -> T:
        """Run ``coro`` on the fleet's loop and return its result (bounded)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def call(self, func: Callable[[], T]) -> T:
        """Call ``func`` on the fleet's loop (for loop-bound objects such as asyncio queues)."""

        async def call() -> T:
            return func()

        return self.run(call())

    async def _start(self) -> None:
        self.connection = ConnectionManager(NatsConfig.from_url(self.server.url, name="fleet", request_timeout_s=5))
        await self.connection.connect()
        self.gate: asyncio.Queue[None] = asyncio.Queue()
        self.runtime = Runtime(build_service(self.gate), self.connection, graceful_timeout_s=1)
        await self.runtime.start()
        self.client = Client(self.connection)
        self.queue: JobQueue[Any] = JobQueue(self.connection, name="work")
        await self.queue.connect()
        self.bus = EventBus(self.connection)
        await self.bus.connect()
        for name, actions, token in (("actions", True, None), ("readonly", False, None), ("token", False, TOKEN)):
            settings = DashboardSettings(
                nats=NatsConfig.from_url(self.server.url, request_timeout_s=5),
                allow_actions=actions,
                token=SecretStr(token) if token else None,
                refresh_s=0.3,
                streams_every_s=0.5,
            )
            await self._serve(name, settings)

    async def _serve(self, name: str, settings: DashboardSettings) -> None:
        hub = Hub(settings)
        await hub.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound before serving: the port is known and connections wait in the backlog
        sock.listen(64)
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, hub), log_level="warning", timeout_graceful_shutdown=1)
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the test process owns signals
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        self._servers.append(server)
        self.hubs[name] = hub
        self.urls[name] = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._tasks)
        for hub in self.hubs.values():
            await hub.stop()
        await self.bus.close()
        await self.queue.close()
        await self.runtime.shutdown()
        await self.connection.close()

    async def until(self, hub: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = WAIT_S) -> None:
        """Wait until ``predicate(overview)`` holds for dashboard ``hub``, woken by its refreshes."""
        watched = self.hubs[hub]

        async def wait() -> None:
            while not predicate(watched.overview()):
                watched.changed.clear()
                await watched.changed.wait()

        await asyncio.wait_for(wait(), timeout_s)

    def __enter__(self) -> Fleet:
        self._thread.start()
        self.run(self._start(), timeout_s=30)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.run(self._stop(), timeout_s=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One server, the ``shop`` service and three dashboards (actions, read-only, token) for the module."""
    store: Path = tmp_path_factory.mktemp("dashboard-nats")
    with NatsServer(store_dir=store) as server, Fleet(server) as running:
        yield running
