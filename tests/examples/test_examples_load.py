"""Every example target loads the way ``shipkit run`` loads it, and declares what its README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipkit.service.description import describe
from shipkit.service.importer import load_service

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "examples.kanban.app:service",
            {
                "name": "kanban",
                "handlers": ["kanban.create", "kanban.move", "kanban.get", "kanban.list", "kanban.audit"],
                "events": ["ship.events.card.*"],
                "streams": ["SHIP_EVENTS"],
            },
        ),
        (
            "examples.agent.app:service",
            {
                "name": "scout",
                "handlers": ["scout.survey", "scout.status"],
                "kv_watches": [("ship_config", "heartbeat.interval_s"), ("ship_config", ">")],
            },
        ),
        ("examples.chat.alice:service", {"name": "alice", "channels": ["general"], "streams": ["CHANNELS"]}),
        ("examples.chat.bob:service", {"name": "bob", "channels": ["general"], "streams": ["CHANNELS"]}),
    ],
)
def test_example_target_loads(target: str, expected: dict[str, Any]) -> None:
    """``MODULE:service`` imports from the repository root and describes the declared subjects and resources."""
    described = describe(load_service(target, app_dir=REPO_ROOT))
    assert described["name"] == expected["name"]
    if "handlers" in expected:
        assert [h["subject"] for h in described["handlers"]] == expected["handlers"]
    if "events" in expected:
        assert [e["filter"] for e in described["events"]] == expected["events"]
    if "kv_watches" in expected:
        assert [(w["bucket"], w["key"]) for w in described["kv_watches"]] == expected["kv_watches"]
    if "channels" in expected:
        assert [c["channel"] for c in described["channels"]] == expected["channels"]
    if "streams" in expected:
        assert described["streams"] == expected["streams"]
