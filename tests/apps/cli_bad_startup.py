"""A service whose startup hook fails (a bug in user code, not a shipkit error)."""

from __future__ import annotations

from shipkit import Service

service = Service("badstartup")


@service.on_startup
async def connect_to_the_database() -> None:
    """Fail the way a misconfigured dependency would."""
    raise RuntimeError("database at db:5432 refused the connection")
