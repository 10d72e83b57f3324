"""What a declared service will use, as plain data: :func:`describe` (``shipkit inspect``).

Reads only the declarations; nothing is connected or created.
"""

from __future__ import annotations

from typing import Any

from shipkit.config import default_replicas
from shipkit.jobs._layout import QueueLayout
from shipkit.service.app import Service

__all__ = ["describe", "replicas_used", "streams_used"]


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
        "streams": sorted(streams_used(service)),
        "buckets": sorted({w.bucket.bucket for w in service.kv_watches}),
        "replicas": replicas_used(service),
    }


def replicas_used(service: Service) -> dict[str, int]:
    """Replicas each stream, bucket and object store of ``service`` gets when shipkit creates it.

    A declaration above R1 keeps its own; the rest get the service's ``replicas``, else
    ``SHIPKIT_REPLICAS``, else 1 (``shipkit run --replicas`` overrides both at run time).
    """
    setting = service.replicas or default_replicas() or 1
    declared: dict[str, int] = {e.stream.name: e.stream.replicas for e in service.events}
    declared.update({w.bucket.bucket: w.bucket.replicas for w in service.kv_watches})
    if service.publishes_durable_mutations:
        declared[service.event_stream.name] = service.event_stream.replicas
    names = [*streams_used(service), *declared]
    if service.job_workers:
        layout = QueueLayout.build(service.job_queue, "job", None)  # the prefix does not name resources
        names += [layout.bucket, layout.dispatch_stream, layout.counter_stream, layout.results_bucket]
    return {name: declared[name] if declared.get(name, 1) > 1 else setting for name in sorted(names)}


def streams_used(service: Service) -> set[str]:
    """Names of the streams ``service`` needs."""
    names = {e.stream.name for e in service.events}
    if service.channels:
        names.add("CHANNELS")
    if service.publishes_durable_mutations:
        names.add(service.event_stream.name)
    return names
