"""What a declared service will use, as plain data: :func:`describe` (``shipkit inspect``).

Reads only the declarations; nothing is connected or created. The description is the whole
truth of what starting the service provisions: every stream (with its limits, storage and
replicas), consumer, KV bucket and object store, the job workers' queue included, and each
job worker's options. ``streams`` and ``buckets`` stay plain name lists for scripts; the
``*_details`` keys carry the settings.
"""

from __future__ import annotations

from typing import Any

from shipkit.config import KvBucketConfig, StreamConfig, default_replicas
from shipkit.jobs import JobQueue, JobWorkerSpec
from shipkit.jobs.models import Priority, served_priorities
from shipkit.service.app import Service

__all__ = ["describe", "replicas_used", "streams_used"]


def describe(service: Service) -> dict[str, Any]:
    """What ``service`` will use: subjects, streams, consumers, buckets (``shipkit inspect --json``)."""
    queues = _job_queues(service)
    streams = _stream_details(service, queues)
    buckets = [
        _bucket(config, "kv watch") for config in {w.bucket.bucket: w.bucket for w in service.kv_watches}.values()
    ]
    object_stores: list[dict[str, Any]] = []
    for queue in queues.values():
        layout = queue.layout
        kept = {"storage": layout.storage, "replicas": layout.replicas}
        buckets.append({"bucket": layout.bucket, "used_by": "job records", **kept})
        buckets.append({"bucket": layout.workers_bucket, "used_by": "job worker registry", **kept})
        object_stores.append(
            {
                "bucket": layout.results_bucket,
                "used_by": "large job results",
                "storage": layout.storage,
                "replicas": layout.replicas,
            }
        )
    replicas = _apply_replicas(service, [*streams, *buckets, *object_stores])
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
        "job_worker_details": _job_workers(service, queues),
        "streams": sorted(s["name"] for s in streams),
        "stream_details": sorted(streams, key=lambda s: str(s["name"])),
        "buckets": sorted(b["bucket"] for b in buckets),
        "bucket_details": sorted(buckets, key=lambda b: str(b["bucket"])),
        "object_stores": object_stores,
        "replicas": replicas,
    }


def replicas_used(service: Service) -> dict[str, int]:
    """Replicas each stream, bucket and object store of ``service`` gets when shipkit creates it.

    A declaration above R1 keeps its own; the rest get the service's ``replicas``, else
    ``SHIPKIT_REPLICAS``, else 1 (``shipkit run --replicas`` overrides both at run time).
    """
    replicas: dict[str, int] = describe(service)["replicas"]
    return replicas


def _apply_replicas(service: Service, details: list[dict[str, Any]]) -> dict[str, int]:
    """Give every R1 resource the service's replicas setting; the effective count by resource name."""
    setting = service.replicas or default_replicas() or 1
    used: dict[str, int] = {}
    for detail in details:
        if detail["replicas"] <= 1:
            detail["replicas"] = setting
        used[str(detail.get("name") or detail.get("bucket"))] = detail["replicas"]
    return dict(sorted(used.items()))


def streams_used(service: Service) -> set[str]:
    """Names of the streams ``service`` needs (job workers' included)."""
    return {s["name"] for s in _stream_details(service, _job_queues(service))}


def _job_queues(service: Service) -> dict[str, JobQueue[Any]]:
    """The queues ``@service.job_worker`` functions run on, by name, unconnected (only their layout is read)."""
    names = {spec.queue or service.job_queue for spec in service.job_workers}
    return {name: JobQueue(None, name=name) for name in sorted(names)}


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


def _stream_details(service: Service, queues: dict[str, JobQueue[Any]]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for spec in service.events:
        found.setdefault(spec.stream.name, _stream(spec.stream, "durable events"))
    if service.channels:
        found.setdefault("CHANNELS", _stream(StreamConfig.channels(), "channels"))
    if service.publishes_durable_mutations:
        found.setdefault(service.event_stream.name, _stream(service.event_stream, "mutation events"))
    if queues:  # JobQueue's defaults: job events go to the contract's event bus
        found.setdefault("SHIP_EVENTS", _stream(StreamConfig.event_bus(), "job events"))
    for queue in queues.values():
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
        found[f"KV_{layout.workers_bucket}"] = {
            "name": f"KV_{layout.workers_bucket}",
            "used_by": f"KV bucket {layout.workers_bucket} (job worker registry)",
            "subjects": [f"$KV.{layout.workers_bucket}.>"],
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


def _job_workers(service: Service, queues: dict[str, JobQueue[Any]]) -> list[dict[str, Any]]:
    return [_job_worker(spec, queues[spec.queue or service.job_queue]) for spec in service.job_workers]


def _job_worker(spec: JobWorkerSpec, queue: JobQueue[Any]) -> dict[str, Any]:
    layout = queue.layout

    def consumer(priority: Priority) -> dict[str, Any]:
        return {
            "stream": layout.dispatch_stream,
            "durable": layout.consumer_name(spec.worker, priority),
            "filter": layout.dispatch_subject(spec.worker, priority),
            "ack_wait_s": spec.lease_s,
            "priority": priority,
        }

    priorities = served_priorities(spec.priority_levels)
    return {
        "worker": spec.worker,
        "queue": layout.name,
        "concurrency": spec.concurrency,
        "max_attempts": spec.max_attempts or queue.max_attempts,
        "timeout_s": spec.timeout_s,
        "lease_s": spec.lease_s,
        "retention_s": spec.retention_s,
        "priority_levels": spec.priority_levels,
        "backoff": (spec.backoff or queue.backoff).model_dump(),
        "consumer": {k: v for k, v in consumer("normal").items() if k != "priority"},
        "consumers": [consumer(priority) for priority in priorities],
    }
