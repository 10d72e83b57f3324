"""The dashboard's JSON API over real HTTP, against a real server, service and job queue."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import TOKEN, Fleet, Steps


def _get(fleet: Fleet, path: str, dashboard: str = "actions", **kwargs: Any) -> httpx.Response:
    return httpx.get(fleet.urls[dashboard] + path, timeout=10, **kwargs)


def _service(overview: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in overview["services"] if s["name"] == name), None)


def test_overview_lists_the_service_with_its_request_count(fleet: Fleet) -> None:
    """A running service appears with its version, endpoints and the requests it handled."""
    for _ in range(3):
        fleet.run(fleet.client.request("shop.ping", None))
    fleet.run(fleet.until("actions", lambda o: (s := _service(o, "shop")) is not None and s["requests"] >= 3))
    shop = _service(_get(fleet, "/api/overview").json(), "shop")
    assert shop is not None
    assert shop["versions"] == ["2.1.0"]
    instance = shop["instances"][0]
    assert not instance["stale"]
    assert {e["name"] for e in instance["endpoints"]} >= {"ping"}
    assert instance["uptime_s"] is not None


def test_jobs_page_filters_and_pages_on_the_server(fleet: Fleet) -> None:
    """The list pages newest first and filters by state, worker and text, with the matching total."""
    ids = fleet.run(fleet.queue.submit_many([{"steps": 1, "tag": f"needle-{i}"} for i in range(5)], "idle"))
    fleet.run(fleet.until("actions", lambda o: any(q["name"] == "work" and q["indexed"] >= 5 for q in o["queues"])))
    page = _get(fleet, "/api/queues/work/jobs", params={"worker": "idle", "limit": 2}).json()
    assert page["total"] == 5
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    second = _get(fleet, "/api/queues/work/jobs", params={"worker": "idle", "limit": 2, "offset": 2}).json()
    assert [j["id"] for j in second["items"]] == ids[::-1][2:4]
    found = _get(fleet, "/api/queues/work/jobs", params={"q": "needle-3"}).json()
    assert [j["id"] for j in found["items"]] == [ids[3]]
    assert _get(fleet, "/api/queues/work/jobs", params={"state": "dead", "worker": "idle"}).json()["total"] == 0


def test_bad_list_arguments_are_clear_errors(fleet: Fleet) -> None:
    """An unknown state, a non-integer offset and an unknown queue each get a 4xx naming the problem."""
    fleet.run(fleet.until("actions", lambda o: any(q["name"] == "work" for q in o["queues"])))
    bad_state = _get(fleet, "/api/queues/work/jobs", params={"state": "lost"})
    assert bad_state.status_code == 400 and "lost" in bad_state.json()["error"]
    bad_offset = _get(fleet, "/api/queues/work/jobs", params={"offset": "x"})
    assert bad_offset.status_code == 400 and "offset" in bad_offset.json()["error"]
    missing = _get(fleet, "/api/queues/nope/jobs")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_job_page_has_the_record_and_its_events(fleet: Fleet) -> None:
    """A finished job's page carries its payload, result and the job events seen for it."""
    job_id = fleet.run(fleet.queue.submit(Steps(steps=1), "stepper"))
    fleet.call(lambda: fleet.gate.put_nowait(None))
    fleet.run(
        fleet.until(
            "actions",
            lambda o: (
                (j := fleet.hubs["actions"].queues["work"].index.get(job_id)) is not None and j["state"] == "complete"
            ),
        )
    )
    body = _get(fleet, f"/api/queues/work/jobs/{job_id}").json()
    assert body["record"]["payload"] == {"steps": 1}
    assert body["record"]["result"] == {"steps": 1}
    assert "job.complete" in {e["event_type"] for e in body["events"]}
    assert _get(fleet, "/api/queues/work/jobs/JOB-99999").status_code == 404


def test_actions_are_refused_without_allow_actions(fleet: Fleet) -> None:
    """A read-only dashboard answers 403 to an action and leaves the job alone."""
    job_id = fleet.run(fleet.queue.submit({"steps": 1}, "nobody"))
    fleet.run(fleet.until("readonly", lambda o: any(q["name"] == "work" for q in o["queues"])))
    refused = httpx.post(f"{fleet.urls['readonly']}/api/queues/work/jobs/{job_id}/cancel", timeout=10)
    assert refused.status_code == 403 and "--allow-actions" in refused.json()["error"]
    job = fleet.run(fleet.queue.get(job_id))
    assert job is not None and job.state.value == "queued"


def test_cancel_retry_and_purge_report_their_outcome(fleet: Fleet) -> None:
    """Cancel, retry and purge change the job as they say; an action the state forbids is a 409."""
    job_id = fleet.run(fleet.queue.submit({"steps": 1}, "nobody"))
    fleet.run(fleet.until("actions", lambda o: any(q["name"] == "work" for q in o["queues"])))
    url = f"{fleet.urls['actions']}/api/queues/work/jobs/{job_id}"
    cancelled = httpx.post(f"{url}/cancel", timeout=10).json()
    assert cancelled["ok"] and cancelled["state"] == "cancelled"
    again = httpx.post(f"{url}/cancel", timeout=10)
    assert again.status_code == 409
    retried = httpx.post(f"{url}/retry", timeout=10).json()
    assert retried["state"] == "queued"
    assert httpx.post(f"{url}/purge", timeout=10).status_code == 409  # queued: not finished
    httpx.post(f"{url}/cancel", timeout=10)
    before = fleet.run(fleet.queue.counts()).cancelled
    purged = httpx.post(f"{url}/purge", timeout=10).json()
    assert purged["state"] == "purged"
    assert fleet.run(fleet.queue.get(job_id)) is None
    assert fleet.run(fleet.queue.counts()).cancelled == before - 1
    assert httpx.post(f"{url}/explode", timeout=10).status_code == 404


def test_events_are_tailed_with_a_subject_filter(fleet: Fleet) -> None:
    """An emitted event is in the tail; the subject filter keeps only matching subjects."""
    fleet.run(fleet.bus.emit("test.pinged", {"n": 1}))
    fleet.run(fleet.until("actions", lambda o: bool(fleet.hubs["actions"].events.since(0, "test.pinged"))))
    tail = _get(fleet, "/api/events", params={"subject": "test.pinged"}).json()
    assert tail["events"] and all("test.pinged" in e["subject"] for e in tail["events"])
    assert tail["events"][-1]["event"]["payload"] == {"n": 1}


def test_streams_and_consumers_are_listed(fleet: Fleet) -> None:
    """The event stream, the queue's buckets and the dispatch consumers are in the overview."""
    fleet.run(fleet.until("actions", lambda o: any(s["name"] == "JOBS_work_DISPATCH" for s in o["streams"])))
    streams = {s["name"]: s for s in _get(fleet, "/api/overview").json()["streams"]}
    assert streams["KV_JOBS_work"]["kind"] == "kv" and streams["KV_JOBS_work"]["bucket"] == "JOBS_work"
    assert streams["SHIP_EVENTS"]["replicas"] == 1
    consumers = {c["name"] for c in streams["JOBS_work_DISPATCH"]["consumers"]}
    assert {"stepper", "sleeper"} <= consumers


@pytest.mark.parametrize("path", ["/", "/api/overview", "/static/app.js"])
def test_the_token_protects_page_and_api(fleet: Fleet, path: str) -> None:
    """Without the token every path is 401; with the header, or ?token= (which sets a cookie), it is served."""
    assert _get(fleet, path, "token").status_code == 401
    assert _get(fleet, path, "token", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _get(fleet, path, "token", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with httpx.Client(base_url=fleet.urls["token"], timeout=10) as browser:
        assert browser.get(path, params={"token": TOKEN}).status_code == 200
        assert browser.get(path).status_code == 200  # the cookie now


def test_live_feed_sends_the_overview(fleet: Fleet) -> None:
    """The server-sent event stream starts with an overview event holding the services."""
    with httpx.stream("GET", fleet.urls["actions"] + "/api/live", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "event: overview"
        assert next(lines).startswith('data: {"refreshed_at"')
