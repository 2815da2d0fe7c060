"""Output schemas that cost clients less to check say what the typed ones say."""

from __future__ import annotations

from typing import Any

import jsonschema

from mcp_backgroundr.models import TaskList
from mcp_backgroundr.tools.schemas import cheap_to_validate, rows_checked_by_key


def _listing_schema() -> dict[str, Any]:
    return rows_checked_by_key(cheap_to_validate(TaskList.model_json_schema()), "tasks")


def test_rows_checked_by_key_name_each_field_its_type_and_meaning() -> None:
    row = _listing_schema()["properties"]["tasks"]["items"]
    assert set(row) == {"type", "required", "description"}
    described = row["description"]
    assert "state (one of running, completed, failed, killed): " in described
    assert "pid (integer, may be absent): Process id of the main process" in described
    assert "listening (array of string, may be absent): TCP addresses" in described
    assert "containment (string, may be absent, default marker): " in described


def test_rows_checked_by_key_refuse_a_row_without_a_required_key_and_keep_the_typed_row_aside() -> None:
    schema = _listing_schema()
    row = {"task_id": "bg-1", "command": "true", "state": "running", "started_at": "x", "runtime_seconds": 1.0}
    validator = jsonschema.Draft202012Validator(schema)
    assert [error.message for error in validator.iter_errors({"tasks": [row]})] == ["'owner' is a required property"]
    typed = schema["$defs"]["TaskSummary"]
    assert typed == cheap_to_validate(TaskList.model_json_schema())["properties"]["tasks"]["items"]
    assert not list(validator.iter_errors({"tasks": [{**row, "owner": "box:1:2"}]}))
