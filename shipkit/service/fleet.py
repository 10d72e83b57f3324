"""Several services in one process on one connection: :class:`Fleet`.

``shipkit run a:svc b:svc c:svc`` builds a fleet. Each service gets its own
:class:`~shipkit.service.runtime.Runtime` (its own subscriptions, consumers, discovery and
counts) on one shared :class:`~shipkit.connection.ConnectionManager`, which the fleet closes
after every runtime has shut down. Start is all-or-nothing: if one service fails to start, the
ones already running are shut down again before the error propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shipkit.connection import ConnectionManager, ProvisionMode
from shipkit.errors import ConfigurationError
from shipkit.logging import get_logger
from shipkit.service.app import Service
from shipkit.service.host import Counts
from shipkit.service.name_guard import NameGuard
from shipkit.service.runtime import Runtime

__all__ = ["Fleet"]

log = get_logger("shipkit.fleet")


class Fleet:
    """Runs ``services`` side by side on ``connection`` (the fleet closes it at the end).

    Args:
        services: at least one, with distinct names.
        connection: the one connection every runtime shares.
        graceful_timeout_s: grace for each runtime (default: each service's own).
        provision: ``"create"`` or ``"verify"``.
        name_guard: the same-name check each runtime makes at start.

    Raises:
        ConfigurationError: no service, or two services with the same name.
    """

    def __init__(
        self,
        services: Sequence[Service],
        connection: ConnectionManager,
        *,
        graceful_timeout_s: float | None = None,
        provision: ProvisionMode = "create",
        name_guard: NameGuard = "off",
        replicas: int | None = None,
    ) -> None:
        names = [service.name for service in services]
        if not names:
            raise ConfigurationError("a fleet needs at least one service")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigurationError(f"services {', '.join(duplicates)} are given more than once in one process")
        self.connection = connection
        self.runtimes = [
            Runtime(
                service,
                connection,
                graceful_timeout_s=graceful_timeout_s,
                provision=provision,
                name_guard=name_guard,
                replicas=replicas,
            )
            for service in services
        ]
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()

    @property
    def counts(self) -> Counts:
        """The runtimes' shutdown counts, summed."""
        total = Counts()
        for runtime in self.runtimes:
            total.add(runtime.counts)
        return total

    def request_exit(self, *, force: bool = False) -> None:
        """Ask every runtime to stop; ``force`` skips (or cuts short) the grace period."""
        if force:
            self.force_exit.set()
        self.should_exit.set()
        for runtime in self.runtimes:
            runtime.request_exit(force=force)

    async def start(self) -> None:
        """Connect once, then start each runtime in order (all or none)."""
        await self.connection.connect()
        started: list[Runtime] = []
        try:
            for runtime in self.runtimes:
                await runtime.start()
                started.append(runtime)
        except BaseException:
            await asyncio.gather(*(runtime.shutdown() for runtime in started), return_exceptions=True)
            await self.connection.close()
            raise
        log.info("fleet.started", services=[runtime.service.name for runtime in self.runtimes])

    async def shutdown(self) -> Counts:
        """Shut every runtime down at once (each in its own order), then close the connection."""
        results = await asyncio.gather(*(runtime.shutdown() for runtime in self.runtimes), return_exceptions=True)
        for runtime, result in zip(self.runtimes, results, strict=True):
            if isinstance(result, BaseException):
                log.error("fleet.shutdown_failed", service=runtime.service.name, exc_info=result)
        await self.connection.close()
        return self.counts

    async def serve(self) -> None:
        """Start, wait for :meth:`request_exit`, then shut down."""
        await self.start()
        try:
            await self.should_exit.wait()
        finally:
            await self.shutdown()
