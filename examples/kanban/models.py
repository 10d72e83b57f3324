"""What travels on the wire: requests, replies and event payloads of the kanban service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Column = Literal["todo", "doing", "done"]
"""The board's columns."""


class NewCard(BaseModel):
    """``kanban.create``: a card to add."""

    title: str = Field(min_length=1, max_length=200)
    column: Column = "todo"


class Card(BaseModel):
    """A card on the board: the reply of every command, and the payload of ``card.*`` events."""

    id: int
    title: str
    column: Column


class CardRef(BaseModel):
    """``kanban.get``: which card."""

    id: int


class MoveCard(BaseModel):
    """``kanban.move``: which card, and where to."""

    id: int
    column: Column


class CardQuery(BaseModel):
    """``kanban.list``: an optional column filter (an empty request lists every card)."""

    column: Column | None = None


class AuditEntry(BaseModel):
    """One line of the audit trail, built from a ``card.*`` event."""

    event_type: str
    card: Card
    correlation_id: str
    timestamp: str
