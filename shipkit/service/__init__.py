"""What users write and what runs it.

Read the modules in this order, each importing only the ones before it (and the layers below):

- :mod:`~shipkit.service.codec`: how a handler's annotations decode payloads and encode replies;
- :mod:`~shipkit.service.specs`: the frozen records the decorators build;
- :mod:`~shipkit.service.host`: the small protocol of what handlers and consumers may reach;
- :mod:`~shipkit.service.context`: :class:`Context`, what a handler sees of its message;
- :mod:`~shipkit.service.app`: :class:`Service`, the decorators;
- :mod:`~shipkit.service.endpoint`: the request hot path, its error contract and the router;
- :mod:`~shipkit.service.streaming` / :mod:`~shipkit.service.stream_reader`: streamed replies
  (async-generator handlers, the cancel signal) and reading them;
- :mod:`~shipkit.service.agent_protocol`, :mod:`~shipkit.service.agent`,
  :mod:`~shipkit.service.agent_host`: hosting agents over the Synadia Agent Protocol for NATS;
- :mod:`~shipkit.service.consumers`: durable events, KV watches, channels, job workers;
- :mod:`~shipkit.service.discovery`: the ``$SRV`` verbs;
- :mod:`~shipkit.service.runtime`: :class:`Runtime`, start and ordered shutdown;
- :mod:`~shipkit.service.runner`: :func:`run`/:func:`serve`, signals and the embedded server;
- :mod:`~shipkit.service.client`: :class:`Client`, the caller's side;
- :mod:`~shipkit.service.importer`: ``module:attr`` strings;
- :mod:`~shipkit.service.builder`: the seed's :class:`NatsServiceBuilder` over :class:`Service`.
"""

from shipkit.service.app import Lifespan, Service
from shipkit.service.builder import NatsServiceBuilder, ServiceArgs
from shipkit.service.client import Client
from shipkit.service.context import Context
from shipkit.service.runner import run, serve
from shipkit.service.runtime import Counts, Runtime, RuntimeState

__all__ = [
    "Client",
    "Context",
    "Counts",
    "Lifespan",
    "NatsServiceBuilder",
    "Runtime",
    "RuntimeState",
    "Service",
    "ServiceArgs",
    "run",
    "serve",
]
