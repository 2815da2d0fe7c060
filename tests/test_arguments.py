"""Arguments as clients send them, turned into what a tool's schema takes."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_backgroundr.errors import InvalidArgumentError
from mcp_backgroundr.tools.arguments import hint, normalized, simple_schema

PYDANTIC_SCHEMA: dict[str, Any] = {
    "$defs": {"State": {"enum": ["running", "on-failure"], "title": "State", "type": "string"}},
    "properties": {
        "text": {"title": "Text", "type": "string"},
        "state": {"anyOf": [{"$ref": "#/$defs/State"}, {"type": "null"}], "default": None, "title": "State"},
        "env": {
            "anyOf": [
                {"additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "type": "object"},
                {"type": "null"},
            ],
            "default": None,
        },
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
    # A null that is the default goes; one that means something (unset this variable) stays.
    values = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert schema["properties"]["env"] == {"additionalProperties": values, "type": "object"}


def test_client_habits_become_what_the_schema_takes() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    given = {"text": 404, "state": "On_Failure", "env": {"A": 1, "B": True, "C": None}, "seconds": 3,
             "command": ["a", 2.5]}  # fmt: skip
    assert normalized(schema, given) == {
        "text": "404",
        "state": "on-failure",
        "env": {"A": "1", "B": "true", "C": None},
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


def test_true_or_false_where_a_number_is_expected_is_refused_naming_the_field() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    for given, field in (({"text": "x", "seconds": True}, "seconds=true"), ({"text": "x", "seconds": False}, "false")):
        with pytest.raises(InvalidArgumentError, match=field):
            normalized(schema, given)
    assert normalized(schema, {"text": "x", "seconds": "5"})["seconds"] == "5"  # pydantic takes "5" as 5


def test_ids_lose_the_spaces_pasted_around_them_and_text_keeps_its_own() -> None:
    schema = {"properties": {"task_id": {"type": "string"}, "text": {"type": "string"}}, "required": ["task_id"]}
    given = {"task_id": " t1a2b3c4d \n", "text": "  indented\n"}
    assert normalized(schema, given) == {"task_id": "t1a2b3c4d", "text": "  indented\n"}


def test_true_for_a_restart_policy_means_on_failure_and_a_null_env_value_stays_null() -> None:
    schema = {
        "properties": {
            "restart": {"enum": ["no", "on-failure", "always"], "type": "string"},
            "state": {"enum": ["running", "killed"], "type": "string"},
            "env": {"additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "type": "object"},
        }
    }
    given = {"restart": True, "state": True, "env": {"A": None, "B": 1}}
    assert normalized(schema, given) == {"restart": "on-failure", "state": True, "env": {"A": None, "B": "1"}}
    assert normalized(schema, {"restart": False})["restart"] == "no"


def test_text_items_are_taken_as_they_are_made_text_or_refused_at_the_first_that_is_neither() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    argv = ["echo", "a"]
    assert normalized(schema, {"command": argv})["command"] is argv
    assert normalized(schema, {"command": ["echo", 1, 2.5, True]})["command"] == ["echo", "1", "2.5", "true"]
    assert normalized(schema, {"env": {"A": 1, "B": None, "C": "c"}})["env"] == {"A": "1", "B": None, "C": "c"}
    with pytest.raises(InvalidArgumentError, match=r"command\[2\]=\{\} is invalid: give text$"):
        normalized(schema, {"command": ["echo", 1, {}, []]})
    with pytest.raises(InvalidArgumentError, match=r"command\[1\]=null is invalid: give text$"):
        normalized(schema, {"command": ["echo", None]})
    with pytest.raises(InvalidArgumentError, match=r"env.B=\[1\] is invalid: give text or null$"):
        normalized(schema, {"env": {"A": 1, "B": [1]}})


def test_an_enum_text_far_longer_than_every_member_is_refused_unread() -> None:
    schema = simple_schema(PYDANTIC_SCHEMA)
    assert normalized(schema, {"state": " On_Failure "})["state"] == "on-failure"
    with pytest.raises(InvalidArgumentError, match=r"is invalid: use one of running, on-failure$"):
        normalized(schema, {"state": "on-failure" * 3})
