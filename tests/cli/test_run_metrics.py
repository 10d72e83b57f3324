"""``shipkit run --metrics-port``: a real subprocess serving /metrics, /healthz and /readyz."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from apps.cli_process import ShipkitProcess
from prometheus_client.parser import text_string_to_metric_families

from shipkit import Client


async def test_run_serves_metrics_and_health(tmp_path: Path, shipkit_nats_url: str, shipkit_client: Client) -> None:
    """`--metrics-port 0` logs the bound URL; a scrape there counts the request the service answered."""
    process = await ShipkitProcess.start(
        "cli_echo:service", "--nats-url", shipkit_nats_url, "--metrics-port", "0", cwd=tmp_path
    )
    try:
        url = (await process.wait_for_log("health.listening"))["url"]
        await process.wait_for_log("service.started")
        assert await shipkit_client.request("clitest.echo", {"a": 1}) == {"a": 1}
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            text = (await http.get("/metrics")).text
        families = {family.name: family for family in text_string_to_metric_families(text)}
        requests = {
            s.labels["endpoint"]: s.value for s in families["shipkit_requests"].samples if s.name.endswith("_total")
        }
        assert requests["echo"] == 1
        process.send_signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
    finally:
        await process.kill()
