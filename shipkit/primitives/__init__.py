"""The seed primitives, usable on their own (each also takes a shared ``ConnectionManager``).

==================  ===================  ==============================================
primitive           transport            module
==================  ===================  ==============================================
PubSub              core NATS            :mod:`shipkit.primitives.pubsub`
EventBus            JetStream            :mod:`shipkit.primitives.eventbus` (loop: ``consumer``)
ChannelService      JetStream            :mod:`shipkit.primitives.channels`
KvStore & co.       NATS KV              :mod:`shipkit.primitives.kv`, ``beings``, ``ship_config``, ``health``
ShipObjectStore     NATS object store    :mod:`shipkit.primitives.objects`, ``snapshots``, ``artifacts``
==================  ===================  ==============================================

They import nothing above them. Built on them: the request-reply builder of the seed,
:class:`shipkit.NatsServiceBuilder` (:mod:`shipkit.service.builder`), and durable jobs (:mod:`shipkit.jobs`).
"""

from shipkit.primitives.artifacts import ArtifactStore
from shipkit.primitives.beings import BeingRegistry
from shipkit.primitives.channels import ChannelService
from shipkit.primitives.consumer import DurableConsumer
from shipkit.primitives.eventbus import EventBus, emit_event, get_global_bus, set_global_bus
from shipkit.primitives.health import HealthMetrics
from shipkit.primitives.kv import KvEntry, KvStore, KvWatch
from shipkit.primitives.objects import ShipObjectStore
from shipkit.primitives.pubsub import EventType, Publisher, PubSub, Subscriber
from shipkit.primitives.ship_config import ShipConfig
from shipkit.primitives.snapshots import BeingSnapshots

__all__ = [
    "ArtifactStore",
    "BeingRegistry",
    "BeingSnapshots",
    "ChannelService",
    "DurableConsumer",
    "EventBus",
    "EventType",
    "HealthMetrics",
    "KvEntry",
    "KvStore",
    "KvWatch",
    "PubSub",
    "Publisher",
    "ShipConfig",
    "ShipObjectStore",
    "Subscriber",
    "emit_event",
    "get_global_bus",
    "set_global_bus",
]
