"""The typed chunks a prompt's stream yields to a caller: :class:`Response`, :class:`Status`, :class:`Query`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient

from shipkit._json import loads
from shipkit.errors import SerializationError, as_shipkit_error
from shipkit.service.agent_protocol import Attachment, Response, Status, encode_prompt

__all__ = ["Chunk", "Query", "Response", "Status", "decode_chunk"]


@dataclass(slots=True)
class Query:
    """A question the agent asks mid-stream; answer it once with :meth:`reply`.

    Attributes:
        id: the query's id.
        prompt: the question.
        reply_subject: where the answer goes.
        answered: True once replied (by ``on_query`` or :meth:`reply`).
    """

    id: str
    prompt: str
    reply_subject: str
    attachments: tuple[Attachment, ...] = ()
    answered: bool = False
    _nc: NatsClient | None = field(default=None, repr=False)

    async def reply(self, answer: str, *, attachments: tuple[Attachment, ...] = ()) -> None:
        """Send the answer (text, with optional attachments) to the agent."""
        if self._nc is None:
            raise SerializationError(f"query {self.id!r} was not received from a connection; cannot reply")
        body = encode_prompt(answer, attachments) if attachments else answer.encode()
        try:
            await self._nc.publish(self.reply_subject, body)
        except Exception as exc:
            raise as_shipkit_error(exc, f"answering query {self.id!r}") from exc
        self.answered = True


Chunk = Response | Status | Query
"""One item of a prompt's stream."""


def _attachments(raw: Any, where: str) -> tuple[Attachment, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SerializationError(f"{where}: 'attachments' must be a list")
    return tuple(Attachment.from_wire(item, where) for item in raw)


def decode_chunk(body: bytes, where: str, nc: NatsClient) -> Chunk | None:
    """A chunk from its wire form; None for the ``ack`` status and for unknown chunk types.

    Raises:
        SerializationError: not a JSON object with a string ``type``, or a known type with a
            malformed ``data`` (the message names ``where``).
    """
    value = loads(body, where)
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str):
        raise SerializationError(f"{where}: a chunk must be a JSON object with a string 'type'")
    data = value.get("data")
    if kind == "response":
        if isinstance(data, str):
            return Response(data)
        if isinstance(data, dict) and isinstance(data.get("text"), str):
            return Response(data["text"], _attachments(data.get("attachments"), where))
        raise SerializationError(f"{where}: a response chunk needs text")
    if kind == "status":
        if not isinstance(data, str):
            raise SerializationError(f"{where}: a status chunk's data must be a string")
        return None if data == "ack" else Status(data)
    if kind == "query":
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("id", "reply_subject", "prompt")
        ):
            raise SerializationError(f"{where}: a query chunk needs string id, reply_subject and prompt")
        attachments = _attachments(data.get("attachments"), where)
        return Query(data["id"], data["prompt"], data["reply_subject"], attachments, _nc=nc)
    return None  # the protocol says: ignore chunk types you do not know
