"""A service declaring one of each kind of intake, for ``shipkit inspect``."""

from __future__ import annotations

from typing import Any

from shipkit import ChannelMessage, Event, Service, ShipEvent

service = Service("inspected", version="1.2.3", prefix="shop.orders")


@service.handler("create", mutation="order.created")
async def create(order: dict[str, Any]) -> dict[str, Any]:
    """Create an order."""
    return order


@service.handler("get", queue=None)
async def get(ref: dict[str, Any]) -> dict[str, Any]:
    """Fetch an order."""
    return ref


@service.on_event("payment.*", durable="orders_payments")
async def on_payment(event: ShipEvent) -> None:
    """React to payments."""


@service.kv_watch("ship_config", key="orders.>")
async def on_config(value: Any) -> None:
    """Follow the orders settings."""


@service.on_message("heartbeat", queue="watchers")
async def on_heartbeat(event: Event) -> None:
    """Watch heartbeats."""


@service.on_channel("ops")
async def on_ops(message: ChannelMessage) -> None:
    """Read the ops channel."""
