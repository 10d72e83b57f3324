"""A service whose durable event consumer needs the SHIP_EVENTS stream (for ``shipkit run --verify``)."""

from __future__ import annotations

from shipkit import Service, ShipEvent

service = Service("cliverify")


@service.on_event("order.*")
async def on_order(event: ShipEvent) -> None:
    """Consume order events (the test only checks startup)."""
