"""A service with typed handlers, events, a KV watch, a channel and a job worker, for AsyncAPI docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shipkit import ChannelMessage, Event, Service, ShipEvent
from shipkit.jobs import JobContext


class Line(BaseModel):
    """One order line."""

    sku: str
    quantity: int = 1


class NewOrder(BaseModel):
    """What a caller sends to create an order."""

    customer: str
    lines: list[Line]


class Order(NewOrder):
    """A stored order."""

    id: str


class Payment(BaseModel):
    """A payment event's payload."""

    order_id: str
    amount_cents: int


class Invoice(BaseModel):
    """A job's payload."""

    order_id: str


service = Service("shop", version="2.0.1", description="Orders and invoices.", prefix="shop.orders")


@service.handler("create", mutation="order.created")
async def create(order: NewOrder) -> Order:
    """Create an order."""
    return Order(id="o-1", **order.model_dump())


@service.handler("ping", queue=None)
async def ping() -> str:
    """Answer with a word."""
    return "pong"


@service.on_event("payment.*", durable="shop_payments")
async def on_payment(payment: Payment) -> None:
    """React to payments."""


@service.on_event("order.>", durable="shop_audit")
async def audit(event: ShipEvent) -> None:
    """Audit every order event."""


@service.kv_watch("ship_config", key="shop.>")
async def on_config(value: dict[str, Any]) -> None:
    """Follow the shop's settings."""


@service.on_message("heartbeat", queue="watchers")
async def on_heartbeat(event: Event) -> None:
    """Watch heartbeats."""


@service.on_channel("ops")
async def on_ops(message: ChannelMessage) -> None:
    """Read the ops channel."""


@service.job_worker("invoicer")
async def invoice(payload: Invoice, job: JobContext) -> dict[str, str]:
    """Write an invoice."""
    return {"invoice": payload.order_id}
