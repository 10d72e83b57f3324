"""shipkit: a declarative agent-service framework over NATS.

Write plain async functions, decorate them on a :class:`Service`, run ``shipkit run module:service``.
The primitives underneath (:mod:`shipkit.primitives`) stay usable on their own.
"""

from shipkit._version import __version__
from shipkit.config import KvBucketConfig, NatsConfig, ObjectStoreConfig, StreamConfig
from shipkit.connection import ConnectionManager
from shipkit.errors import (
    BucketNotFoundError,
    ChecksumMismatchError,
    ClusterUnavailableError,
    ConfigurationError,
    InvalidNameError,
    JetStreamError,
    KeyNotFoundError,
    NatsConnectionError,
    NatsTimeoutError,
    NotConnectedError,
    ObjectNotFoundError,
    PayloadTooLargeError,
    ProvisioningError,
    RevisionConflictError,
    SerializationError,
    ServiceError,
    ShipkitError,
    StartupInterruptedError,
    StreamExistsError,
    StreamNotFoundError,
)
from shipkit.models import BeingState, BeingStatus, ChannelMessage, ErrorResponse, Event, ObjectMeta, ShipEvent
from shipkit.primitives.kv import KvEntry
from shipkit.server import NatsServer
from shipkit.service import Client, Context, NatsServiceBuilder, Runtime, Service, ServiceArgs, run, serve
from shipkit.service.agent import AgentContext
from shipkit.service.agent_protocol import AgentPrompt, Attachment

__all__ = [
    "AgentContext",
    "AgentPrompt",
    "Attachment",
    "BeingState",
    "BeingStatus",
    "BucketNotFoundError",
    "ChannelMessage",
    "ChecksumMismatchError",
    "Client",
    "ClusterUnavailableError",
    "ConfigurationError",
    "ConnectionManager",
    "Context",
    "ErrorResponse",
    "Event",
    "InvalidNameError",
    "JetStreamError",
    "KeyNotFoundError",
    "KvBucketConfig",
    "KvEntry",
    "NatsConfig",
    "NatsConnectionError",
    "NatsServer",
    "NatsServiceBuilder",
    "NatsTimeoutError",
    "NotConnectedError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "ObjectStoreConfig",
    "PayloadTooLargeError",
    "ProvisioningError",
    "RevisionConflictError",
    "Runtime",
    "SerializationError",
    "Service",
    "ServiceArgs",
    "ServiceError",
    "ShipEvent",
    "ShipkitError",
    "StartupInterruptedError",
    "StreamConfig",
    "StreamExistsError",
    "StreamNotFoundError",
    "__version__",
    "run",
    "serve",
]
