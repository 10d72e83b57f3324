"""What a declared service will use, as plain data: :func:`describe` (``shipkit inspect``).

Reads only the declarations; nothing is connected or created.
"""

from __future__ import annotations

from typing import Any

from shipkit.service.app import Service

__all__ = ["describe", "streams_used"]


def describe(service: Service) -> dict[str, Any]:
    """What ``service`` will use: subjects, streams, consumers, buckets (``shipkit inspect --json``)."""
    return {
        "name": service.name,
        "version": service.version,
        "prefix": service.prefix,
        "handlers": [
            {
                "name": h.name,
                "subject": h.subject,
                "queue": h.queue,
                "mutation": h.mutation if isinstance(h.mutation, str) or h.mutation is None else "<callback>",
            }
            for h in service.handlers
        ],
        "default_handler": service.default_handler_spec is not None,
        "events": [
            {"pattern": e.pattern, "durable": e.durable, "filter": e.filter_subject, "stream": e.stream.name}
            for e in service.events
        ],
        "kv_watches": [{"bucket": w.bucket.bucket, "key": w.key} for w in service.kv_watches],
        "messages": [{"subject": m.subject, "queue": m.queue} for m in service.messages],
        "channels": [{"channel": c.channel, "replay_history": c.replay_history} for c in service.channels],
        "job_workers": [j.worker for j in service.job_workers],
        "agents": [
            {"agent": a.subjects.agent, "owner": a.subjects.owner, "prompt": a.subjects.subject("prompt")}
            for a in service.agents
        ],
        "streams": sorted(streams_used(service)),
        "buckets": sorted({w.bucket.bucket for w in service.kv_watches}),
    }


def streams_used(service: Service) -> set[str]:
    """Names of the streams ``service`` needs."""
    names = {e.stream.name for e in service.events}
    if service.channels:
        names.add("CHANNELS")
    if service.publishes_durable_mutations:
        names.add(service.event_stream.name)
    return names
