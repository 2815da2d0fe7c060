"""Output schemas that cost clients less to check say what the typed ones say."""

from __future__ import annotations

from typing import Any

import jsonschema

from mcp_backgroundr.models import TaskList
from mcp_backgroundr.tools.schemas import cheap_to_validate, rows_described


def _listing_schema() -> dict[str, Any]:
    return rows_described(cheap_to_validate(TaskList.model_json_schema()), "tasks")


def test_described_rows_name_each_field_its_type_and_meaning() -> None:
    listed = _listing_schema()["properties"]["tasks"]
    assert set(listed) == {"type", "title", "description"}
    described = listed["description"]
    assert "state (one of running, completed, failed, killed): " in described
    assert "pid (integer, may be absent): Process id of the main process" in described
    assert "listening (array of string, may be absent): TCP addresses" in described
    assert "containment (string, may be absent, default marker): " in described


def test_described_rows_are_not_walked_by_a_check_and_the_typed_row_is_kept_aside() -> None:
    """A client's check of the answer does not descend into the rows (each descent cost the Python
    SDK's client about 6 us a row); the typed row under $defs refuses what the answer's check lets by."""
    schema = _listing_schema()
    row = {"task_id": "bg-1", "command": "true", "state": "running", "started_at": "x", "runtime_seconds": 1.0}
    assert "items" not in schema["properties"]["tasks"]
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors({"tasks": [row, {"any": 1}]}))
    typed = schema["$defs"]["TaskSummary"]
    assert typed == cheap_to_validate(TaskList.model_json_schema())["properties"]["tasks"]["items"]
    refused = jsonschema.Draft202012Validator(typed).iter_errors(row)
    assert [error.message for error in refused] == ["'owner' is a required property"]
    assert not list(jsonschema.Draft202012Validator(typed).iter_errors({**row, "owner": "box:1:2"}))
