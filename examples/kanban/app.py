"""A kanban board as a shipkit service: commands, mutation events and an audit consumer.

Run it from the repository root (an embedded nats-server starts if nothing listens on 4222)::

    shipkit run examples.kanban.app:service

and call it with any NATS client::

    nats req kanban.create '{"title":"Write the docs"}'
    nats req kanban.move '{"id":1,"column":"doing"}'
    nats req kanban.list ''

Cards live in the KV bucket ``kanban_cards`` (``card.{id}``, plus a ``next_id`` counter), so
every instance sees the same board. ``create`` and ``move`` publish ``card.created`` /
``card.moved`` events (the reply is the payload) to the ``SHIP_EVENTS`` stream, and the
durable consumer :func:`audit` turns every ``card.*`` event into a line of the audit trail.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pydantic import ValidationError

from examples.kanban.models import AuditEntry, Card, CardQuery, CardRef, MoveCard, NewCard
from shipkit import Context, Service, ServiceError, ShipEvent

service = Service("kanban", version="1.0.0", description="A tiny kanban board with an audit trail")

CARDS_BUCKET = "kanban_cards"
"""The KV bucket holding the board (created at first use)."""


def card_key(card_id: int) -> str:
    """The KV key of a card."""
    return f"card.{card_id}"


# -- commands -------------------------------------------------------------------------------------


@service.handler("create", mutation="card.created")
async def create(new: NewCard, ctx: Context) -> Card:
    """Add a card to a column (``todo`` unless said otherwise)."""
    cards = await ctx.kv(CARDS_BUCKET)
    counter = await cards.read_modify_write("next_id", lambda last: (last or 0) + 1)  # safe across instances
    card = Card(id=counter.value, title=new.title, column=new.column)
    await cards.create(card_key(card.id), card)
    ctx.log.info("card.added", card_id=card.id, column=card.column)
    return card


@service.handler("move", mutation="card.moved")
async def move(request: MoveCard, ctx: Context) -> Card:
    """Move a card to another column; 404 when there is no such card."""
    cards = await ctx.kv(CARDS_BUCKET)

    def moved(current: object) -> Card:
        if current is None:
            raise ServiceError(404, f"card {request.id} not found")  # aborts the write
        return Card.model_validate(current).model_copy(update={"column": request.column})

    entry = await cards.read_modify_write(card_key(request.id), moved)  # compare-and-set, retried on conflict
    card: Card = entry.value
    return card


@service.handler("get")
async def get(ref: CardRef, ctx: Context) -> Card:
    """One card; 404 when there is no such card."""
    cards = await ctx.kv(CARDS_BUCKET)
    value = await cards.get(card_key(ref.id))
    if value is None:
        raise ServiceError(404, f"card {ref.id} not found")
    return Card.model_validate(value)


@service.handler("list")
async def list_cards(query: CardQuery | None, ctx: Context) -> list[Card]:
    """Every card by id, or only those of ``column`` (an empty request body lists all)."""
    cards = await ctx.kv(CARDS_BUCKET)
    board = [Card.model_validate(value) for value in (await cards.get_all("card.*")).values()]
    column = query.column if query is not None else None
    return sorted((card for card in board if column in (None, card.column)), key=lambda card: card.id)


# -- the audit trail ------------------------------------------------------------------------------


class AuditTrail:
    """The last ``maxlen`` card events this instance saw, oldest first (kept in memory).

    The durable consumer resumes where it left off after a restart, so a restarted instance
    shows only the events that arrived since; a real service would store the trail.
    """

    def __init__(self, maxlen: int = 100) -> None:
        self.entries: deque[AuditEntry] = deque(maxlen=maxlen)
        self._grew: asyncio.Event | None = None

    def record(self, entry: AuditEntry) -> None:
        """Append an entry and wake whoever waits in :meth:`wait_for`."""
        self.entries.append(entry)
        if self._grew is not None:
            self._grew.set()

    def clear(self) -> None:
        """Forget every entry (and any waiter's event, which belonged to an earlier run's loop)."""
        self.entries.clear()
        self._grew = None

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[AuditEntry]:
        """Wait until ``count`` entries are recorded (at most ``timeout_s``); return them.

        Raises:
            TimeoutError: fewer entries arrived in time.
        """
        async with asyncio.timeout(timeout_s):
            while len(self.entries) < count:
                self._grew = asyncio.Event()
                await self._grew.wait()
        return list(self.entries)


trail = AuditTrail()


@service.on_startup
async def fresh_trail() -> None:
    """Start every run with an empty trail."""
    trail.clear()


@service.on_event("card.*", max_concurrency=1)  # one at a time: the trail keeps the stream's order
async def audit(event: ShipEvent, ctx: Context) -> None:
    """Record every card event; events whose payload is not a card are logged and skipped."""
    try:
        card = Card.model_validate(event.payload)
    except ValidationError:
        ctx.log.warning("audit.not_a_card", event_type=event.event_type, source=event.source)
        return
    trail.record(
        AuditEntry(
            event_type=event.event_type,
            card=card,
            correlation_id=event.correlation_id,
            timestamp=event.timestamp,
        )
    )
    ctx.log.info("audit.recorded", event_type=event.event_type, card_id=card.id)


@service.handler("audit")
async def audit_trail() -> list[AuditEntry]:
    """The audit trail this instance holds, oldest first."""
    return list(trail.entries)
