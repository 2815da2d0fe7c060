"""Property-based fuzzing of every tool's arguments, through one server, at least 1,000 calls a run.

Every answer must be a result or a one-line ``isError``; the server must keep serving; and once
every task is ended, no process may be left (the autouse fixture checks). Commands are drawn
from a harmless set (or are shell comments), so fuzzing never runs anything that matters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult

from ..e2e.harness import connect, text_of

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

CALLS = 1_000
SAFE_COMMANDS = ["true", "echo fuzz", "sleep 1", "exit 3", "printf 'a\\0b\\377\\n'", "yes | head -c 100000", "cat"]
TOOLS = {
    "run_background_task": [
        "command", "cwd", "env", "name", "stdin", "pty", "keep_running", "restart", "max_restarts",
        "max_log_bytes", "max_runtime_seconds", "wait_for_pattern", "wait_for_port", "wait_timeout_seconds",
    ],
    "get_task_status": ["task_id", "lines", "since", "grep", "raw"],
    "wait_for_task": ["task_id", "timeout_seconds", "output_pattern", "port", "since"],
    "end_background_task": ["task_id", "grace_seconds"],
    "send_task_input": ["task_id", "text", "newline", "close"],
    "remove_task": ["task_id"],
    "list_tasks": ["state", "all", "limit"],
}  # fmt: skip

hostile_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 65535, 65536, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.01, 0.5, 1.0, 1e308, -0.0, math.inf]),
)
hostile_text = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["", " ", "\0", "(", "[", "*", "a" * 100_000, "../../..", "/", "/nonexistent", "%s%n", "\u202e"]),
)
any_value = st.one_of(
    st.none(), st.booleans(), hostile_numbers, hostile_text,
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)  # fmt: skip
# A small wait limit keeps a fuzz run short; hostile numbers still reach it through any_value.
short_seconds = st.one_of(st.sampled_from([0, 0.05, 0.5, 1, 2]), any_value)


@dataclass(frozen=True)
class TaskRef:
    """A reference to the n-th task started so far, resolved at call time (generation stays pure)."""

    index: int


def resolved(value: Any, task_ids: list[str]) -> Any:
    if isinstance(value, TaskRef):
        return task_ids[value.index % len(task_ids)] if task_ids else "00000000"
    return value


def argument(name: str) -> st.SearchStrategy[Any]:
    """Values for one parameter: plausible ones, hostile ones, and the wrong type altogether."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "command": st.one_of(st.sampled_from(SAFE_COMMANDS), hostile_text.map(lambda t: "true # " + t)),
        "task_id": st.builds(TaskRef, st.integers(0, 1000)),
        "cwd": st.sampled_from(["/", "/tmp", "/nonexistent", "relative/dir", "/etc/hostname"]),
        "env": st.dictionaries(hostile_text, hostile_text, max_size=3),
        "restart": st.sampled_from(["no", "on-failure", "always", "sometimes"]),
        "state": st.sampled_from(["running", "completed", "failed", "killed", "zombie"]),
        "wait_for_pattern": hostile_text,
        "output_pattern": hostile_text,
        "grep": hostile_text,
        "text": hostile_text,
        "timeout_seconds": short_seconds,
        "wait_timeout_seconds": short_seconds,
        "grace_seconds": short_seconds,
        "max_runtime_seconds": short_seconds,
    }
    return st.one_of(plausible.get(name, any_value), any_value)


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    tool = draw(st.sampled_from(sorted(TOOLS)))
    names = draw(st.lists(st.sampled_from(TOOLS[tool]), unique=True, max_size=len(TOOLS[tool])))
    if tool == "run_background_task" and draw(st.booleans()):
        names = ["command", *(n for n in names if n != "command")]
    arguments = {name: draw(argument(name)) for name in names}
    if draw(st.integers(0, 19)) == 0:
        arguments[draw(st.sampled_from(["cursor", "bogus", "id", ""]))] = draw(any_value)
    return tool, arguments


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


def test_every_fuzzed_call_is_a_result_or_a_one_line_error(portal: BlockingPortal, server_command: str) -> None:
    task_ids: list[str] = []
    calls = 0
    with portal.wrap_async_context_manager(connect(server_command)) as client:

        def call(tool: str, arguments: dict[str, Any]) -> CallToolResult:
            result: CallToolResult = portal.call(Client.call_tool, client, tool, arguments)
            return result

        @settings(max_examples=CALLS, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def one_call(data: st.DataObject) -> None:
            nonlocal calls
            tool, drawn = data.draw(tool_calls())
            arguments = {name: resolved(value, task_ids) for name, value in drawn.items()}
            result = call(tool, arguments)
            calls += 1
            if result.is_error:
                message = text_of(result)
                assert "\n" not in message and "Traceback" not in message, (tool, repr(arguments)[:500], message)
            else:
                assert result.structured_content is not None, (tool, repr(arguments)[:500])
                if tool == "run_background_task":
                    task_ids.append(result.structured_content["task_id"])

        one_call()
        assert calls >= CALLS
        listed = call("list_tasks", {"all": True, "limit": 1000}).structured_content
        assert listed is not None and listed["total"] == len(listed["tasks"])  # every task, to end them all
        for task in listed["tasks"]:
            ended = call("end_background_task", {"task_id": task["task_id"], "grace_seconds": 0})
            assert not ended.is_error, text_of(ended)
            assert ended.structured_content is not None and ended.structured_content["survivors"] == []
