"""``shipkit dashboard``: a live web page of one NATS system's services, beings, agents, jobs,
events, streams, consumers and buckets (the ``shipkit[dashboard]`` extra: Starlette + uvicorn).

It reads only from NATS and keeps a small view in memory: polled sources (``$SRV.STATS``, job
counters, the JetStream stream and consumer lists) on a timer, pushed ones (job records,
beings, agent heartbeats, events) by subscription. Modules::

    settings   DashboardSettings: what to read and where to serve
    _wire      the NATS calls: gather, js_api, KvMirror
    services   ServiceCollector   ($SRV discovery)
    streams    StreamCollector    (streams, consumers, buckets)
    job_index  JobIndex           (one queue's jobs in memory; paged and filtered here)
    queues     QueueView          (counts, throughput, job pages, actions)
    fleet      Fleet              (beings and agents)
    events     EventTail          (the live event tail)
    hub        Hub                (the connection, the collectors and their refresh loops)
    app        create_app         (Starlette routes, token, live feed)
    server     serve, serve_async (uvicorn; connects before it listens)
    static/    the page: plain HTML, CSS and JS
"""

from __future__ import annotations

from shipkit.dashboard.app import create_app
from shipkit.dashboard.hub import Hub
from shipkit.dashboard.server import serve, serve_async
from shipkit.dashboard.settings import DEFAULT_PORT, DashboardSettings

__all__ = ["DEFAULT_PORT", "DashboardSettings", "Hub", "create_app", "serve", "serve_async"]
