"""How a held dispatch message is settled with the server: :class:`Settlement` and :func:`settle`."""

from __future__ import annotations

import enum
import json

from nats.aio.msg import Msg

from shipkit._publish import PipelinedPublisher
from shipkit.errors import translate_nats_errors


class Settlement(enum.Enum):
    """What the server is told about a held dispatch message."""

    ACK = "ack"  # done with: the work queue deletes it
    NAK = "nak"  # given back: redelivered (after an optional delay)
    TERM = "term"  # never to be redelivered (undecodable, dead, failed for good)


async def settle(msg: Msg, how: Settlement, publisher: PipelinedPublisher, delay_s: float = 0.0) -> None:
    """Ack, nak (with delay) or term ``msg`` unless it was settled already.

    A nak waits for the server's confirmation, so a job given back is claimable the moment this
    returns; acks and terms are sent without waiting (a lost one only means a stale redelivery,
    which the claim drops).
    """
    if msg.is_acked:
        return
    if how is Settlement.NAK:
        payload = b"-NAK"
        if delay_s:
            payload += b" " + json.dumps({"delay": int(delay_s * 1e9)}).encode()
        await publisher.request(msg.reply, payload)
        msg._ackd = True  # nats-py's own flag, so its ack()/nak() refuse a second settlement
        return
    with translate_nats_errors(f"{how.value} {msg.subject}"):
        await (msg.ack() if how is Settlement.ACK else msg.term())
