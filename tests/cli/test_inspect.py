"""``shipkit inspect``: what a service will use, as text and as JSON, without connecting anywhere."""

from __future__ import annotations

import json
from pathlib import Path

from apps.cli_process import APPS_DIR, run_cli


def test_text_lists_every_subject_stream_and_bucket(tmp_path: Path) -> None:
    """The text output names each handler subject, consumer, watch, subscription, channel, stream and bucket."""
    result = run_cli("inspect", "cli_inspect:service", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("service inspected 1.2.3\n")
    for expected in [
        "shop.orders.create  queue=q  mutation=order.created",
        "shop.orders.get     queue=- (every instance)",
        "ship.events.payment.*  durable=orders_payments  stream=SHIP_EVENTS",
        "ship_config  key=orders.>",
        "heartbeat  queue=watchers",
        "ops  replay_history=false",
        "streams: CHANNELS, SHIP_EVENTS",
        "buckets: ship_config",
        "$SRV.PING|INFO|STATS.inspected",
    ]:
        assert expected in out, out


def test_json_is_the_service_description(tmp_path: Path) -> None:
    """`--json` prints `describe(service)` as one JSON document on stdout."""
    result = run_cli("inspect", "cli_inspect", "--json", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["name"] == "inspected"
    assert [(h["subject"], h["queue"], h["mutation"]) for h in described["handlers"]] == [
        ("shop.orders.create", "q", "order.created"),
        ("shop.orders.get", None, None),
    ]
    assert described["events"] == [
        {
            "pattern": "payment.*",
            "durable": "orders_payments",
            "filter": "ship.events.payment.*",
            "stream": "SHIP_EVENTS",
        }
    ]
    assert described["kv_watches"] == [{"bucket": "ship_config", "key": "orders.>"}]
    assert described["messages"] == [{"subject": "heartbeat", "queue": "watchers"}]
    assert described["channels"] == [{"channel": "ops", "replay_history": False}]
    assert described["streams"] == ["CHANNELS", "SHIP_EVENTS"]
    assert described["buckets"] == ["ship_config"]


def test_sections_without_entries_are_left_out(tmp_path: Path) -> None:
    """A service with only handlers shows its handlers and `none` for streams and buckets."""
    result = run_cli("inspect", "cli_echo", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "clitest.echo" in result.stdout
    assert "clitest.hold" in result.stdout
    assert "events" not in result.stdout
    assert "streams: none" in result.stdout


def test_import_error_exits_3(tmp_path: Path) -> None:
    """An import string that names no service is a startup failure with one clear line."""
    result = run_cli("inspect", "cli_two", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 3
    assert "Error: module 'cli_two' holds several services" in result.stderr
    assert result.stdout == ""


def test_job_worker_service_shows_its_queue_resources(tmp_path: Path) -> None:
    """A job-worker-only service lists no request subjects, its worker options, and the queue's streams."""
    result = run_cli("inspect", "cli_long_job:service", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "no requests;" in out and "longjob.<command>" not in out
    assert "slow  queue=jobs  concurrency=1  max_attempts=3  timeout=none  lease=30s" in out
    for name in ("JOBS_jobs_DISPATCH", "JOBS_jobs_COUNTERS", "KV_JOBS_jobs", "SHIP_EVENTS", "JOBS_jobs_RESULTS"):
        assert name in out
