"""Arguments as clients send them, turned into what a tool's schema takes."""

from __future__ import annotations

from typing import Any

from mcp_backgroundr.arguments import hint, normalized, simple_schema

PYDANTIC_SCHEMA: dict[str, Any] = {
    "$defs": {"State": {"enum": ["running", "on-failure"], "title": "State", "type": "string"}},
    "properties": {
        "text": {"title": "Text", "type": "string"},
        "state": {"anyOf": [{"$ref": "#/$defs/State"}, {"type": "null"}], "default": None, "title": "State"},
        "env": {"anyOf": [{"additionalProperties": {"type": "string"}, "type": "object"}, {"type": "null"}]},
        "seconds": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
        "command": {"anyOf": [{"type": "string"}, {"items": {"type": "string"}, "type": "array"}]},
    },
    "required": ["text"],
    "title": "toolArguments",
    "type": "object",
}


def test_the_simple_schema_inlines_references_and_drops_what_clients_trip_on() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    assert schema["additionalProperties"] is False
    assert "$defs" not in schema and "title" not in schema
    assert schema["properties"]["state"] == {"enum": ["running", "on-failure"], "type": "string"}
    assert schema["properties"]["seconds"] == {"type": "number"}
    assert schema["properties"]["env"] == {"additionalProperties": {"type": "string"}, "type": "object"}


def test_client_habits_become_what_the_schema_takes() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    given = {"text": 404, "state": "On_Failure", "env": {"A": 1, "B": True}, "seconds": 3, "command": ["a", 2.5]}
    assert normalized(schema, given) == {
        "text": "404",
        "state": "on-failure",
        "env": {"A": "1", "B": "true"},
        "seconds": 3,
        "command": ["a", "2.5"],
    }
    assert normalized(schema, {"text": None, "state": None, "seconds": None, "other": None}) == {
        "text": None,
        "other": None,
    }
    assert normalized(schema, {"text": "x", "state": "sleeping"})["state"] == "sleeping"


def test_hints_name_only_what_the_tool_takes() -> None:
    known = frozenset({"task_id", "timeout_seconds", "output_pattern"})
    assert hint("timeout", known) == "timeout_seconds"
    assert hint("taskId", known) == "task_id"
    assert hint("port", known) is None
    assert hint("background", known) is not None
