"""The shape every connectable shipkit object shares: ``connect()``, ``close()`` and ``async with``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["Connectable"]


class Connectable(abc.ABC):
    """Base of the primitives, clients and queues: ``async with x:`` connects, and closes on exit."""

    @abc.abstractmethod
    async def connect(self) -> Self:
        """Connect (and provision what the object needs); returns ``self``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what :meth:`connect` acquired (idempotent)."""

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
