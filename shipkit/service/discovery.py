"""NATS service discovery (ADR-32, ``nats micro ls|info|stats|ping``) for a running service.

Each running service instance answers, without a queue group, on
``$SRV.{PING,INFO,STATS}``, ``$SRV.{VERB}.{name}`` and ``$SRV.{VERB}.{name}.{id}`` with the
``io.nats.micro.v1.*_response`` JSON shapes; its request handlers are the endpoints and the
counters are the live ones the dispatcher keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from shipkit._json import dumps
from shipkit.service.endpoint import Endpoint

__all__ = ["INFO_TYPE", "PING_TYPE", "STATS_TYPE", "Discovery", "ServiceIdentity", "new_instance_id"]

PING_TYPE = "io.nats.micro.v1.ping_response"
INFO_TYPE = "io.nats.micro.v1.info_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"
_VERBS = ("PING", "INFO", "STATS")


def new_instance_id() -> str:
    """A unique instance id (a NUID, as the official NATS micro libraries use)."""
    return NUID().next().decode()


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """What discovery says about a service besides its endpoints (plain data, no service object)."""

    name: str
    version: str
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


class Discovery:
    """Answers the ``$SRV`` verbs for one service instance.

    Args:
        identity: name, version, description and metadata.
        endpoints: the live request endpoints (their counters feed STATS).
        instance_id: this instance's id.
    """

    def __init__(self, identity: ServiceIdentity, endpoints: Iterable[Endpoint], instance_id: str) -> None:
        self.identity = identity
        self.endpoints = list(endpoints)
        self.instance_id = instance_id
        self.started = datetime.now(UTC)
        self._subscriptions: list[Subscription] = []
        self._nc: Client | None = None
        self._metadata = dict(identity.metadata)
        ids = {"name": identity.name, "id": instance_id, "version": identity.version}
        self._ping = dumps({"type": PING_TYPE, **ids, "metadata": self._metadata})
        self._info = dumps(
            {
                "type": INFO_TYPE,
                **ids,
                "metadata": self._metadata,
                "description": identity.description,
                "endpoints": [self._endpoint_info(e) for e in self.endpoints],
            }
        )

    @staticmethod
    def _endpoint_info(endpoint: Endpoint) -> dict[str, Any]:
        return {
            "name": endpoint.name,
            "subject": endpoint.subject,
            "queue_group": endpoint.queue_group or "",
            "metadata": endpoint.metadata,
        }

    def stats(self) -> dict[str, Any]:
        """The current STATS response as a dict."""
        return {
            "type": STATS_TYPE,
            "name": self.identity.name,
            "id": self.instance_id,
            "version": self.identity.version,
            "metadata": self._metadata,
            # Z form: what the Go and Python micro libraries write and parse
            "started": self.started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "endpoints": [
                {
                    "name": e.name,
                    "subject": e.subject,
                    "queue_group": e.queue_group or "",
                    "num_requests": e.num_requests,
                    "num_errors": e.num_errors,
                    "last_error": e.last_error,
                    "processing_time": e.processing_time_ns,
                    "average_processing_time": e.average_processing_time_ns,
                }
                for e in self.endpoints
            ],
        }

    def subjects(self) -> list[str]:
        """Every subject this instance answers discovery on."""
        name, uid = self.identity.name, self.instance_id
        return [s for verb in _VERBS for s in (f"$SRV.{verb}", f"$SRV.{verb}.{name}", f"$SRV.{verb}.{name}.{uid}")]

    async def start(self, nc: Client) -> None:
        """Subscribe (no queue group: every instance answers)."""
        self._nc = nc
        handlers = {"PING": self._on_ping, "INFO": self._on_info, "STATS": self._on_stats}
        for subject in self.subjects():
            verb = subject.split(".")[1]
            self._subscriptions.append(await nc.subscribe(subject, cb=handlers[verb]))

    async def stop(self) -> None:
        """Stop answering (first thing at shutdown, so tools stop routing to this instance)."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()

    async def _respond(self, msg: Msg, body: bytes) -> None:
        if msg.reply and self._nc is not None:  # not msg.respond(): that echoes the request headers
            await self._nc.publish(msg.reply, body)

    async def _on_ping(self, msg: Msg) -> None:
        await self._respond(msg, self._ping)

    async def _on_info(self, msg: Msg) -> None:
        await self._respond(msg, self._info)

    async def _on_stats(self, msg: Msg) -> None:
        await self._respond(msg, dumps(self.stats()))
