"""The job system's fast ShipEvent encoder writes exactly the bytes of the ShipEvent wire model."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shipkit.jobs._events import EventEncoder
from shipkit.models import ShipEvent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(
    event_type=st.sampled_from(["job.queued", "job.complete", "job.dead"]),
    source=st.text(max_size=20),
    payload=json_values,
)
def test_encoder_matches_the_model_byte_for_byte(event_type: str, source: str, payload: Any) -> None:
    """Re-encoding the encoder's output through ShipEvent gives the same bytes (order, spacing, escapes)."""
    raw = EventEncoder(source).encode(event_type, payload)
    event = ShipEvent.from_json(raw)
    assert event.to_json() == raw
    assert (event.event_type, event.source, event.version) == (event_type, source, "1.0")
    assert event.payload == json.loads(ShipEvent.new(event_type, payload, source=source).to_json())["payload"]
    assert re.fullmatch(r"[0-9a-f]{8}", event.correlation_id)
    assert event.timestamp.endswith("+00:00")
