"""End-to-end: every bad input gets a one-line isError answer, and nothing else is disturbed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from mcp_backgroundr.tools.appserver import CRASHED

from .harness import call, call_error, connect, text_of

pytestmark = pytest.mark.anyio

BAD_STARTS: list[tuple[dict[str, Any], str]] = [
    ({"command": ""}, "command"),
    ({"command": "   \t"}, "command"),
    ({"command": None}, "command"),
    ({"command": []}, "command"),
    ({"command": [["ls"]]}, "command"),
    ({"command": "true", "env": {"A": [1]}}, "env"),
    ({}, "command"),
    ({"command": "echo \0"}, "command"),
    ({"command": "true", "cwd": "/definitely/not/here"}, "cwd"),
    ({"command": "true", "cwd": "/etc/hostname"}, "cwd"),
    ({"command": "true", "env": {"A=B": "x"}}, "env"),
    ({"command": "true", "env": "A=1"}, "env"),
    ({"command": "true", "name": "n" * 10_000}, "name"),
    ({"command": "true", "cwd": "/tmp/" + "x" * 5000}, "cwd"),
    ({"command": "true", "env": {"BIG": "x" * 200_000}}, "too long"),
    ({"command": "true", "bogus": 1}, "unknown argument bogus"),
    ({"command": "true", "b" * 100_000: 1}, "unknown argument bbbb"),
    ({"command": "true", "max_memory_bytes": 1}, "from 1048576 (1 MiB)"),
    ({"command": "true", "host": "h" * 100_000}, "a host is at most 516 characters"),
    ({"command": "true", "restart": "r" * 100_000}, "is invalid: use one of no, on-failure, always"),
    # Arrays where text is taken: validation listed every one (a line of megabytes), after a walk of
    # them all for client habits on the event loop; the first is named, and too many are refused by
    # their count before any is read (500,000 held every client 6.8 s).
    ({"command": ["echo", *[[1]] * 1000]}, "command[1]=[1] is invalid: give text"),
    ({"command": "true", "env": {f"K{index}": [1] for index in range(1000)}}, "env.K0=[1] is invalid"),
    ({"command": [None] * 1000}, "command[0]=null is invalid: give text"),
    # (Far more items than these are more than a message may hold: refused unread, test_long_commands.py.)
    ({"command": ["w" * 60] * 40_000}, "the command (2439999 bytes) is too long"),
    ({"command": "true", "env": {f"K{index}": "v" * 60 for index in range(40_000)}}, "env (40000 variables, "),
]


async def test_bad_start_arguments_are_refused_and_start_nothing(server_command: str) -> None:
    async with connect(server_command) as client:
        for arguments, field in BAD_STARTS:
            message = await call_error(client, "run_background_task", **arguments)
            assert field in message, (arguments, message)
            assert len(message) < 1000, (field, len(message))  # a value is shown cut, never whole
        assert (await call(client, "list_tasks"))["tasks"] == []


BAD_STATUS: list[tuple[dict[str, Any], str]] = [
    ({"task_id": "nope"}, "task_id"),
    ({"task_id": ""}, "task_id"),
    ({"task_id": 7}, "task_id"),
    ({}, "task_id"),
    ({"lines": -1}, "lines"),
    ({"lines": 10**12}, "lines"),
    ({"lines": "many"}, "lines"),
    ({"since": -5}, "since"),
    ({"since": 10**15}, "since"),
    ({"since": 1.5}, "since"),
    ({"cursor": 5}, "did you mean cursor -> since"),
]


async def test_bad_status_and_end_arguments_leave_other_tasks_untouched(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo steady; sleep 300")
        for arguments, field in BAD_STATUS:
            merged = {"task_id": task["task_id"]} | arguments if "task_id" not in arguments else arguments
            if not arguments:
                merged = {}
            message = await call_error(client, "get_task_status", **merged)
            assert field in message, (arguments, message)
        for grace in (-1, 10**9, "soon"):
            message = await call_error(client, "end_background_task", task_id=task["task_id"], grace_seconds=grace)
            assert "grace_seconds" in message
        assert "task_id" in await call_error(client, "end_background_task", task_id="missing")
        assert "state" in await call_error(client, "list_tasks", state="sleeping")
        # Far longer than any state: refused before its separators were taken out on the event loop.
        assert "is invalid: use one of running" in await call_error(client, "list_tasks", state="s" * 100_000)
        status = await call(client, "get_task_status", task_id=task["task_id"])
        assert status["state"] == "running"
        assert status["kill_requested"] is False


async def test_an_unknown_tool_is_an_error_and_the_server_keeps_serving(server_command: str, tmp_path: Path) -> None:
    async with connect(server_command) as client:
        result = await client.call_tool("no_such_tool", {})
        assert result.is_error
        result = await client.call_tool("n" * 100_000, {})
        assert result.is_error and "Unknown tool: nnn" in text_of(result) and len(text_of(result)) < 200
        # Names and URIs the server does not know were sent back whole, however long.
        for uri in ("task://" + "x" * 100_000 + "/log", "nowhere://" + "x" * 100_000):
            with pytest.raises(MCPError, match=r"^Unknown resource: ") as refused:
                await client.read_resource(uri)
            assert len(str(refused.value)) < 200, len(str(refused.value))
        with pytest.raises(MCPError, match=r"^Unknown prompt: ppp") as refused:
            await client.get_prompt("p" * 100_000)
        assert len(str(refused.value)) < 200, len(str(refused.value))
        started = await call(client, "run_background_task", command="true", cwd=str(tmp_path))
        assert started["cwd"] == str(tmp_path)


EXTREME_NUMBERS = (2**63, 2**64, 10**30, -(2**63) - 1, 1e308, -1e308)
"""Past what a C long or a double's integer part holds: a value passed on to the kernel or to C
unchecked raises OverflowError inside the tool: a crash, answered "<tool> failed unexpectedly"."""


def _numeric_fields(schema: dict[str, Any]) -> list[str]:
    def numeric(spec: dict[str, Any]) -> bool:
        kinds = [spec.get("type")] + [option.get("type") for option in spec.get("anyOf", [])]
        return "integer" in kinds or "number" in kinds

    return [name for name, spec in schema.get("properties", {}).items() if numeric(spec)]


async def test_every_numeric_argument_of_every_tool_takes_extreme_values_in_one_line(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo steady; sleep 300", stdin=True)
        base = {"task_id": task["task_id"], "command": "true"}
        tried, broken = [], []
        for tool in (await client.list_tools()).tools:
            required = {name: base[name] for name in tool.input_schema.get("required", []) if name in base}
            for field in _numeric_fields(tool.input_schema):
                for value in EXTREME_NUMBERS:
                    result = await client.call_tool(tool.name, required | {field: value})
                    text = text_of(result)
                    tried.append(f"{tool.name}.{field}")
                    if CRASHED in text or "\n" in text.strip():
                        broken.append((tool.name, field, value, text))
                    if not result.is_error and tool.name == "run_background_task":
                        await call(client, "end_background_task", task_id=result.structured_content["task_id"])
        status = await call(client, "get_task_status", task_id=task["task_id"])
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert not broken
    assert {"get_task_status.since", "wait_for_task.since", "run_background_task.max_memory_bytes"} <= set(tried)
    assert status["state"] == "running" and "steady" in status["output"]


@pytest.mark.anyio
async def test_a_relative_cwd_is_taken_from_the_servers_working_directory_and_a_refusal_says_so(
    server_command: str, tmp_path: Path
) -> None:
    """A relative cwd that did not exist was refused "that directory does not exist" without saying
    relative to what (a new-user trial); the server (started here, in this test's directory) takes
    it from its own working directory, and says which that is."""
    here = os.getcwd()
    (tmp_path / "project").mkdir()
    relative = os.path.relpath(tmp_path / "project", here)
    async with connect(server_command) as client:
        message = await call_error(client, "run_background_task", command="true", cwd="relative/dir")
        started = await call(client, "run_background_task", command="true", cwd=relative)
    taken = f"a relative cwd is taken from the server's working directory, {here}"
    assert message.startswith('cwd="relative/dir" is invalid: that directory does not exist') and taken in message
    assert "pass an absolute path" in message, message
    assert started["cwd"] == str(tmp_path / "project")
