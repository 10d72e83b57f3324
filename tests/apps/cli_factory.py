"""Factories and non-service attributes, for the import-string tests."""

from __future__ import annotations

from typing import Any

from shipkit import Service

settings = {"not": "a service"}


def create_service() -> Service:
    """A factory: ``shipkit run cli_factory:create_service`` calls it."""
    service = Service("fromfactory")

    @service.handler("ping")
    async def ping() -> str:
        return "pong"

    return service


def returns_dict() -> dict[str, Any]:
    """Looks like a factory but does not make a Service."""
    return {}


def needs_arguments(name: str) -> Service:
    """A factory that cannot be called without arguments."""
    return Service(name)


def raises() -> Service:
    """A factory that fails."""
    raise ValueError("the factory is broken")
