"""The small JSON Schema validator submitters use on advertised worker schemas."""

from __future__ import annotations

from pydantic import BaseModel

from shipkit._jsonschema import schema_errors


def test_schema_errors_cover_pydantic_schemas() -> None:
    """Nested models, optionals, lists and enums in pydantic's JSON schema are checked as pydantic would."""

    class Inner(BaseModel):
        name: str

    class Outer(BaseModel):
        inner: Inner
        tags: list[str] = []
        limit: int | None = None

    schema = Outer.model_json_schema()
    assert schema_errors({"inner": {"name": "a"}, "tags": ["x"], "limit": None}, schema) == []
    assert schema_errors({"inner": {}, "tags": [1], "limit": "no"}, schema) == [
        "inner.name: required",
        "tags[0]: expected string, got integer",
        "limit: matches none of the allowed shapes",
    ]


def test_schema_errors_check_enums_bounds_and_extra_fields() -> None:
    """enum, numeric and length bounds, and additionalProperties false are enforced; unknown keywords ignored."""
    schema = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["fast", "slow"]},
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "tag": {"type": "string", "maxLength": 3, "x-unknown": True},
        },
        "additionalProperties": False,
    }
    assert schema_errors({"mode": "fast", "n": 1.0, "tag": "abc"}, schema) == []
    assert schema_errors({"mode": "turbo", "n": 0, "tag": "abcd", "x": 1}, schema) == [
        "mode: must be one of ['fast', 'slow']",
        "n: must be at least 1",
        "tag: must be at most 3 characters",
        "x: not allowed",
    ]
    assert schema_errors(True, {"type": "integer"}) == ["<root>: expected integer, got boolean"]
