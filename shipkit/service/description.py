"""What a declared service will use, as plain data: :func:`describe` (``shipkit inspect``).

Reads only the declarations; nothing is connected or created. The description is the whole
truth of what starting the service provisions: every stream (with its limits, storage and
replicas), consumer, KV bucket and object store, the job workers' queue included, and each
job worker's options. ``streams`` and ``buckets`` stay plain name lists for scripts; the
``*_details`` keys carry the settings.
"""

from __future__ import annotations

from typing import Any

from shipkit.config import KvBucketConfig, StreamConfig
from shipkit.jobs import JobQueue
from shipkit.service.app import Service

__all__ = ["describe", "streams_used"]


def describe(service: Service) -> dict[str, Any]:
    """What ``service`` will use: subjects, streams, consumers, buckets (``shipkit inspect --json``)."""
    queue = _job_queue(service)
    streams = _stream_details(service, queue)
    buckets = [
        _bucket(config, "kv watch") for config in {w.bucket.bucket: w.bucket for w in service.kv_watches}.values()
    ]
    object_stores: list[dict[str, Any]] = []
    if queue is not None:
        layout = queue.layout
        buckets.append(
            {"bucket": layout.bucket, "used_by": "job records", "storage": layout.storage, "replicas": layout.replicas}
        )
        object_stores.append(
            {
                "bucket": layout.results_bucket,
                "used_by": "large job results",
                "storage": layout.storage,
                "replicas": layout.replicas,
            }
        )
    return {
        "name": service.name,
        "version": service.version,
        "prefix": service.prefix,
        "answers_requests": bool(service.handlers) or service.default_handler_spec is not None,
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
        "job_worker_details": _job_workers(service, queue),
        "streams": sorted(s["name"] for s in streams),
        "stream_details": sorted(streams, key=lambda s: str(s["name"])),
        "buckets": sorted(b["bucket"] for b in buckets),
        "bucket_details": sorted(buckets, key=lambda b: str(b["bucket"])),
        "object_stores": object_stores,
    }


def streams_used(service: Service) -> set[str]:
    """Names of the streams ``service`` needs (job workers' included)."""
    return {s["name"] for s in _stream_details(service, _job_queue(service))}


def _job_queue(service: Service) -> JobQueue[Any] | None:
    """The queue ``@service.job_worker`` functions run on, unconnected (only its layout is read)."""
    if not service.job_workers:
        return None
    return JobQueue(None, name=service.job_queue)


def _stream(config: StreamConfig, used_by: str) -> dict[str, Any]:
    return {
        "name": config.name,
        "used_by": used_by,
        "subjects": list(config.subjects),
        "retention": config.retention,
        "max_age_s": config.max_age_s,
        "max_msgs": config.max_msgs,
        "max_bytes": config.max_bytes,
        "storage": config.storage,
        "replicas": config.replicas,
    }


def _bucket(config: KvBucketConfig, used_by: str) -> dict[str, Any]:
    return {
        "bucket": config.bucket,
        "used_by": used_by,
        "history": config.history,
        "ttl_s": config.ttl_s,
        "storage": config.storage,
        "replicas": config.replicas,
    }


def _stream_details(service: Service, queue: JobQueue[Any] | None) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for spec in service.events:
        found.setdefault(spec.stream.name, _stream(spec.stream, "durable events"))
    if service.channels:
        found.setdefault("CHANNELS", _stream(StreamConfig.channels(), "channels"))
    if service.publishes_durable_mutations:
        found.setdefault(service.event_stream.name, _stream(service.event_stream, "mutation events"))
    if queue is not None:
        # JobQueue's defaults: job events go to the contract's event bus.
        found.setdefault("SHIP_EVENTS", _stream(StreamConfig.event_bus(), "job events"))
        layout = queue.layout
        prefix = layout.subject_prefix
        jobs = {"storage": layout.storage, "replicas": layout.replicas}
        found[layout.kv_stream] = {
            "name": layout.kv_stream,
            "used_by": f"KV bucket {layout.bucket} (job records)",
            "subjects": [f"$KV.{layout.bucket}.>"],
            "retention": "limits",
            **jobs,
        }
        found[layout.dispatch_stream] = {
            "name": layout.dispatch_stream,
            "used_by": "job dispatch, delayed jobs and schedules",
            "subjects": [f"{prefix}.dispatch.>", f"{prefix}.sched.>", f"{prefix}.cron.>"],
            "retention": "workqueue",
            **jobs,
        }
        found[layout.counter_stream] = {
            "name": layout.counter_stream,
            "used_by": "job ids and per-state counters",
            "subjects": [layout.ids_subject, layout.count_filter],
            "retention": "limits",
            **jobs,
        }
        found[f"OBJ_{layout.results_bucket}"] = {
            "name": f"OBJ_{layout.results_bucket}",
            "used_by": f"object store {layout.results_bucket} (large job results)",
            "subjects": [f"$O.{layout.results_bucket}.>"],
            "retention": "limits",
            **jobs,
        }
    return list(found.values())


def _job_workers(service: Service, queue: JobQueue[Any] | None) -> list[dict[str, Any]]:
    if queue is None:
        return []
    layout = queue.layout
    return [
        {
            "worker": spec.worker,
            "queue": layout.name,
            "concurrency": spec.concurrency,
            "max_attempts": spec.max_attempts or queue.max_attempts,
            "timeout_s": spec.timeout_s,
            "lease_s": spec.lease_s,
            "backoff": (spec.backoff or queue.backoff).model_dump(),
            "consumer": {
                "stream": layout.dispatch_stream,
                "durable": layout.consumer_name(spec.worker),
                "filter": layout.dispatch_subject(spec.worker),
                "ack_wait_s": spec.lease_s,
            },
        }
        for spec in service.job_workers
    ]
