"""The tools' names, parameters, output fields and annotations are public contract: pinned here."""

from __future__ import annotations

import json

import jsonschema
import pytest

from .harness import call, connect

pytestmark = pytest.mark.anyio

STATUS_FIELDS = {
    "task_id", "name", "command", "cwd", "state", "exit_code", "signal", "kill_requested", "pid", "started_at",
    "ended_at", "runtime_seconds", "output", "cursor", "output_bytes", "truncated", "truncation", "lingering_pids",
    "grep_matches", "listening", "cpu_percent", "memory_rss_bytes", "process_count", "restarts", "next_start_at",
    "dropped_bytes", "end_reason", "max_runtime_seconds", "containment", "max_memory_bytes", "max_processes",
    "host", "host_reachable", "host_seen_at", "host_problem",
}  # fmt: skip

EXPECTED = {
    "run_background_task": (
        {
            "command",
            "cwd",
            "env",
            "name",
            "stdin",
            "pty",
            "keep_running",
            "restart",
            "max_restarts",
            "max_log_bytes",
            "max_runtime_seconds",
            "max_memory_bytes",
            "max_processes",
            "wait_for_pattern",
            "wait_for_port",
            "wait_timeout_seconds",
            "host",
        },
        {"command"},
        {"task_id", "pid", "state", "command", "cwd", "log_path", "containment", "wait", "host"},
    ),
    "wait_for_task": (
        {"task_id", "timeout_seconds", "output_pattern", "port", "since"},
        {"task_id"},
        {"reason", "waited_seconds", "matched_line", "matched_cursor", "status", "advice"},
    ),
    "get_task_status": ({"task_id", "lines", "since", "grep", "raw"}, {"task_id"}, STATUS_FIELDS),
    "send_task_input": (
        {"task_id", "text", "newline", "close"},
        {"task_id", "text"},
        {"task_id", "bytes_written", "closed", "cursor"},
    ),
    "end_background_task": (
        {"task_id", "grace_seconds"},
        {"task_id"},
        {
            "task_id",
            "state",
            "exit_code",
            "signal",
            "signalled_pids",
            "escalated",
            "survivors",
            "containment",
            "verified",
            "advice",
        },
    ),
    "list_tasks": ({"state", "all", "limit"}, set(), {"tasks", "total"}),
    "remove_task": ({"task_id"}, {"task_id"}, {"task_id", "freed_bytes"}),
}


async def test_tools_are_pinned(server_command: str) -> None:
    async with connect(server_command) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == set(EXPECTED)
    for name, (parameters, required, outputs) in EXPECTED.items():
        tool = tools[name]
        assert set(tool.input_schema["properties"]) == parameters, name
        assert set(tool.input_schema.get("required", [])) == required, name
        assert tool.output_schema is not None
        assert set(tool.output_schema["properties"]) == outputs, name
        assert tool.description
        assert tool.input_schema["additionalProperties"] is False, name
        assert "$ref" not in json.dumps(tool.input_schema) and "$defs" not in tool.input_schema, name
        for schema in (tool.input_schema, tool.output_schema):
            for field, spec in schema["properties"].items():
                assert spec.get("description") or "$ref" in spec or "items" in spec, f"{name}.{field}"
    annotations = {name: tool.annotations for name, tool in tools.items()}
    assert annotations["get_task_status"] is not None and annotations["get_task_status"].read_only_hint
    assert annotations["list_tasks"] is not None and annotations["list_tasks"].read_only_hint
    assert annotations["end_background_task"] is not None and annotations["end_background_task"].destructive_hint
    listed = tools["list_tasks"].output_schema
    # Inlined (no $ref, no anyOf): a client checks a 100-task answer 2-3x faster (docs/benchmarks.md).
    assert "$ref" not in str(listed) and "anyOf" not in str(listed)
    for name, tool in tools.items():
        # Every answer but list_tasks' rows is typed field by field (no $defs: nothing set aside).
        assert name == "list_tasks" or "$defs" not in str(tool.output_schema), name


LISTED_FIELDS = {
    "task_id", "name", "command", "state", "pid", "exit_code", "started_at", "runtime_seconds", "listening",
    "owner", "containment", "host", "host_reachable", "host_seen_at", "lingering",
}  # fmt: skip
LISTED_REQUIRED = {"task_id", "command", "state", "started_at", "runtime_seconds", "owner"}


async def test_list_tasks_rows_are_described_and_typed_aside(server_command: str) -> None:
    """A deliberate change of the pinned contract (issue 10): list_tasks' rows are published as an
    array whose description names every field of a row, its type and meaning, with the fully typed row
    under $defs/TaskSummary, which nothing refers to. The Python SDK's client checks every value it
    descends into at about 6 us each, so 100 typed rows cost it 5-9 ms, more than the server's whole
    answer and more than the fastest peer's (which publishes no output schema); rows checked by their
    required keys still cost it a descent into each, 0.56 ms; rows it is not told of, 0.01 ms
    (docs/benchmarks.md 13). The answer itself is unchanged; tests/test_answers.py proves every answer
    passes the typed model, and a client that wants every value checked finds the typed row here: each
    listed row must pass it."""
    async with connect(server_command) as client:
        listed = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}["list_tasks"]
        await call(client, "run_background_task", command="sleep 30", name="web")
        await call(client, "run_background_task", command="true")
        rows = (await call(client, "list_tasks"))["tasks"]
    assert listed is not None
    array = listed["properties"]["tasks"]
    assert array["type"] == "array" and "items" not in array
    assert all(f"{field} (" in array["description"] for field in LISTED_FIELDS), array["description"]
    typed = listed["$defs"]["TaskSummary"]
    assert set(typed["properties"]) == LISTED_FIELDS and set(typed["required"]) == LISTED_REQUIRED
    assert typed["properties"]["state"]["enum"] == ["running", "completed", "failed", "killed"]
    jsonschema.Draft202012Validator.check_schema(listed)
    assert len(rows) == 2
    for task in rows:
        jsonschema.validate(task, typed, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**rows[0], "pid": "41"}, typed, cls=jsonschema.Draft202012Validator)


async def test_input_schemas_inline_enums_and_say_what_else_is_taken(server_command: str) -> None:
    async with connect(server_command) as client:
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    assert tools["list_tasks"]["properties"]["state"]["enum"] == ["running", "completed", "failed", "killed"]
    assert tools["run_background_task"]["properties"]["restart"]["enum"] == ["no", "on-failure", "always"]
    command = tools["run_background_task"]["properties"]["command"]
    assert {"type": "string"} in command["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in command["anyOf"]
    values = tools["run_background_task"]["properties"]["env"]["additionalProperties"]
    assert values == {"anyOf": [{"type": "string"}, {"type": "null"}]}  # null unsets a variable


async def test_the_env_schema_takes_the_null_that_unsets_a_variable(server_command: str) -> None:
    """A client that checks arguments against the listed schema before it calls (as many do) must
    be able to send what the tool takes: a value is a string, or null to unset the variable."""
    async with connect(server_command, env={"INHERITED": "here"}) as client:
        schema = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}["run_background_task"]
        arguments = {"command": 'echo "[${INHERITED-unset}] [$ADDED]"', "env": {"INHERITED": None, "ADDED": "x"}}
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(arguments, schema, cls=jsonschema.Draft202012Validator)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"command": "true", "env": {"A": 1}}, schema, cls=jsonschema.Draft202012Validator)
        started = await call(client, "run_background_task", **arguments)
        done = await call(client, "wait_for_task", task_id=started["task_id"], since=0)
    assert done["status"]["output"] == "[unset] [x]\n"


MODEL_VISIBLE_BUDGET = 8000
"""Bytes of tool descriptions, input schemas and instructions a model reads on every turn
(peers: backburner 3 kB, mcp-background-job 5 kB, desktop-commander 63 kB)."""


async def test_what_a_model_reads_of_the_tools_stays_within_8_kb(server_command: str) -> None:
    async with connect(server_command) as client:
        tools = (await client.list_tools()).tools
        instructions = client.instructions or ""
    texts = [instructions] + [(t.description or "") + json.dumps(t.input_schema, separators=(",", ":")) for t in tools]
    assert sum(len(text.encode()) for text in texts) <= MODEL_VISIBLE_BUDGET
