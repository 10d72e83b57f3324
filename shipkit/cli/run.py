"""``shipkit run`` and ``shipkit inspect``: run a service, or describe what it will use.

Each command parses and converts its options, then calls one library function
(:func:`shipkit.service.runner.run`, :func:`shipkit.service.description.describe`), so a script
and the CLI behave the same. Exit codes:

- ``0``: clean exit (after a graceful shutdown);
- ``2``: usage error (bad option);
- ``3``: startup failure (the service cannot be imported, the server is unreachable, a stream
  is missing under ``--verify`` ...): one line on stderr; the traceback with ``--log-level debug``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from shipkit.cli._common import app_dir_option, load_service_or_exit, startup_failure, target_argument
from shipkit.cli._connection_options import connection_options
from shipkit.service.description import describe

if TYPE_CHECKING:
    from shipkit.config import NatsConfig
    from shipkit.logging import LogFormat

__all__ = ["inspect_command", "run_command"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command("run")
@click.argument("targets", metavar="MODULE[:ATTR]...", nargs=-1, required=True)
@connection_options
@app_dir_option
@click.option("--log-level", type=click.Choice(_LOG_LEVELS, case_sensitive=False), default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json", "auto"]),
    default="auto",
    show_default=True,
    help="console for humans, json for one object per line, auto: console on a terminal, else json.",
)
@click.option(
    "--graceful-timeout",
    "graceful_timeout_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Grace period for in-flight work at shutdown.  [default: the service's, 30]",
)
@click.option(
    "--verify", is_flag=True, help="Create nothing: fail at startup if a stream, consumer or bucket is missing."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".shipkit"),
    show_default=True,
    help="Where the embedded server keeps its store (under DIR/nats).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run N processes of the service(s), supervised: a crashed one is restarted; signals fan out.",
)
@click.option("--reload", is_flag=True, help="Restart when a .py file under --app-dir (or .) changes (development).")
@click.option(
    "--strict-name",
    is_flag=True,
    help="Refuse to start when another version or endpoint set already runs under the service's name.",
)
@click.option(
    "--no-embedded", is_flag=True, help="Never start the embedded server when nothing listens on localhost:4222."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus /metrics, /healthz and /readyz on PORT (0: a free one).  [default: off]",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Interface the metrics/health server binds."
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=None,
    metavar="N",
    help="Replicas of every stream and bucket the service provisions (needs a cluster).  "
    "[default: the service's, $SHIPKIT_REPLICAS or 1]",
)
def run_command(
    targets: tuple[str, ...],
    nats_config: NatsConfig,
    app_dir: Path | None,
    log_level: str,
    log_format: str,
    graceful_timeout_s: float | None,
    verify: bool,
    data_dir: Path,
    no_embedded: bool,
    metrics_port: int | None,
    metrics_host: str,
    strict_name: bool,
    workers: int,
    reload: bool,
    replicas: int | None,
) -> None:
    """Run the service MODULE[:ATTR] (or several, in one process) until SIGINT or SIGTERM.

    ATTR names a shipkit.Service (dotted attributes allowed) or a function returning one; with
    MODULE alone, the module must hold exactly one Service. Several targets run side by side on
    one connection (and one embedded server). A second Ctrl-C skips the grace period and gives
    running jobs back to their queue at once.

    \b
    Examples:
      shipkit run kanban.service:service
      shipkit run coordinator:service trainer:service observer:service
      shipkit run app --nats-url nats://nats.internal:4222 --log-format json
      shipkit run app:create_service --verify --graceful-timeout 10
    """
    from shipkit.logging import configure_logging
    from shipkit.service.runner import run

    level = log_level.lower()
    debug = level == "debug"
    configure_logging(level, cast("LogFormat", log_format))  # click.Choice allows only those values
    if workers > 1 or reload:
        if workers > 1 and reload:
            raise click.UsageError("--workers and --reload are mutually exclusive (as in uvicorn)")
        sys.exit(_supervise(nats_config, workers, reload, app_dir, data_dir, embedded=not no_embedded))
    services = [load_service_or_exit(target, app_dir, show_traceback=debug) for target in targets]
    try:
        run(
            services[0] if len(services) == 1 else services,
            config=nats_config,
            graceful_timeout_s=graceful_timeout_s,
            provision="verify" if verify else "create",
            embedded=not no_embedded,
            data_dir=data_dir,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            strict_name=strict_name,
            replicas=replicas,
        )
    except KeyboardInterrupt:  # Ctrl-C before the signal capture was installed (e.g. while connecting)
        sys.exit(130)
    except Exception as exc:
        # The runtime turns every failure after start into log lines, so what gets here failed to start.
        startup_failure(exc, show_traceback=debug)


@click.command("inspect")
@target_argument
@app_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON (for scripts).")
def inspect_command(target: str, app_dir: Path | None, as_json: bool) -> None:
    """Show what the service MODULE[:ATTR] will use: subjects, consumers, streams and buckets.

    Nothing is connected or created; this only imports the module.

    \b
    Examples:
      shipkit inspect kanban.service:service
      shipkit inspect app --json | jq '.handlers[].subject'
    """
    from shipkit.logging import configure_logging

    configure_logging("warning", "console")  # log lines of the imported module go to stderr, not the output
    description = describe(load_service_or_exit(target, app_dir, show_traceback=False))
    if as_json:
        click.echo(json.dumps(description, indent=2))
    else:
        click.echo("\n".join(_describe_lines(description)))


def _supervise(
    nats_config: NatsConfig, workers: int, reload: bool, app_dir: Path | None, data_dir: Path, *, embedded: bool
) -> int:
    """Run the children of ``--workers``/``--reload`` on one (possibly embedded) server; the exit code."""

    from shipkit.cli._supervisor import child_argv, supervise
    from shipkit.cli._supervisor import reload as run_reloading
    from shipkit.service.runner import resolve_config

    config, server = resolve_config(None, nats_config, embedded, data_dir)
    env = dict(os.environ)
    if server is not None:  # the children share the supervisor's embedded server
        env["SHIPKIT_NATS_URL"] = config.url
    argv = child_argv(sys.argv[1:])
    try:
        if reload:
            return run_reloading(argv, (app_dir or Path.cwd()).resolve(), env)
        return supervise(argv, workers, env)
    finally:
        if server is not None:
            server.stop()


def _describe_lines(d: dict[str, Any]) -> list[str]:
    """The human-readable form of :func:`describe`: one section per kind, columns aligned."""

    def queue(value: object) -> str:
        return f"queue={value}" if value else "queue=- (every instance)"

    handlers = [
        (h["subject"], queue(h["queue"]) + (f"  mutation={h['mutation']}" if h["mutation"] else ""))
        for h in d["handlers"]
    ]
    if d["default_handler"]:
        handlers.append((f"{d['prefix']}.>", "default handler (commands no handler takes)"))
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        ("handlers (request-reply)", handlers),
        (
            "events (durable consumers)",
            [(e["filter"], f"durable={e['durable']}  stream={e['stream']}") for e in d["events"]],
        ),
        ("kv watches", [(w["bucket"], f"key={w['key']}") for w in d["kv_watches"]]),
        ("subscriptions (core NATS)", [(m["subject"], queue(m["queue"])) for m in d["messages"]]),
        ("channels", [(c["channel"], f"replay_history={str(c['replay_history']).lower()}") for c in d["channels"]]),
        ("job workers", [(j["worker"], _job_worker_line(j)) for j in d["job_worker_details"]]),
        ("agents (Synadia Agent Protocol)", [(a["prompt"], f"owner={a['owner']}") for a in d["agents"]]),
    ]
    requests = f"requests on {d['prefix']}.<command>; " if d["answers_requests"] else "no requests; "
    lines = [
        f"service {d['name']} {d['version']}",
        f"  {requests}discovery on $SRV.PING|INFO|STATS.{d['name']}",
    ]
    for title, rows in sections:
        if not rows:
            continue
        width = max(len(first) for first, _ in rows)
        lines.append(f"{title}:")
        lines.extend(f"  {first:<{width}}  {rest}".rstrip() for first, rest in rows)
    lines.append(f"streams: {', '.join(d['streams']) or 'none'}")
    lines.extend(f"  {s['name']}  {_limits(s)}  ({s['used_by']})" for s in d["stream_details"])
    lines.append(f"buckets: {', '.join(d['buckets']) or 'none'}")
    lines.extend(f"  {b['bucket']}  {_limits(b)}  ({b['used_by']})" for b in d["bucket_details"])
    if d["object_stores"]:
        lines.append(f"object stores: {', '.join(o['bucket'] for o in d['object_stores'])}")
        lines.extend(f"  {o['bucket']}  {_limits(o)}  ({o['used_by']})" for o in d["object_stores"])
    replicas = d.get("replicas") or {}
    if replicas:
        lines.append("replicas: " + ", ".join(f"{name}=R{count}" for name, count in replicas.items()))
    return lines


def _job_worker_line(j: dict[str, Any]) -> str:
    consumer = j["consumer"]
    timeout = f"{j['timeout_s']:g}s" if j["timeout_s"] is not None else "none"
    return (
        f"queue={j['queue']}  concurrency={j['concurrency']}  max_attempts={j['max_attempts']}  timeout={timeout}"
        f"  lease={j['lease_s']:g}s  consumer={consumer['stream']}/{consumer['durable']}"
    )


def _limits(resource: dict[str, Any]) -> str:
    """``storage=file replicas=1 ...``: the settings of a stream or bucket that are set."""
    keys = ("retention", "max_age_s", "max_msgs", "history", "ttl_s", "storage", "replicas")
    return "  ".join(f"{k}={resource[k]}" for k in keys if resource.get(k) is not None)
