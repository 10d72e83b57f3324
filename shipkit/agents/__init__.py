"""Calling agents over the Synadia Agent Protocol for NATS (the caller side; hosting is ``@service.agent``).

A layer of its own between ``service`` (whose wire helpers it reuses) and the edge.
"""

from shipkit.agents.caller import AgentInfo, Agents, Instance, QueryHandler
from shipkit.agents.chunks import Chunk, Query, Response, Status
from shipkit.service.agent_protocol import Attachment

__all__ = ["AgentInfo", "Agents", "Attachment", "Chunk", "Instance", "Query", "QueryHandler", "Response", "Status"]
