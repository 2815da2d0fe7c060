"""End-to-end: a wait never outlasts the client's request timeout unless progress keeps it alive.

Without a progress token a wait answers before the cap (45 s by default, lowered here
through its environment variable to keep the tests short) with reason ``timeout`` and
advice on how to go on; with a token it runs its whole length, reporting progress.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mcp import Client

from mcp_backgroundr.config import DEFAULT_UNATTENDED_WAIT_SECONDS, UNATTENDED_WAIT_ENV

from .harness import call, connect, text_of

pytestmark = pytest.mark.anyio

CAP_SECONDS = 1.0
ASKED_SECONDS = 2.5
"""What a wait with a progress token asks for, and waits in full."""
ASKED_UNATTENDED_SECONDS = 30.0
"""What a wait without one asks for: far past the cap, so that answering at the cap shows on a
loaded machine too (a 1 s wait may take 2.5 s there)."""
LOWERED = {UNATTENDED_WAIT_ENV: str(CAP_SECONDS)}


class Progress:
    """A progress callback that counts what it is sent."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, float | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.reports.append((progress, total))


async def _call(
    client: Client, tool: str, progress: Progress | None = None, **arguments: Any
) -> tuple[dict[str, Any], str]:
    result = await client.call_tool(tool, arguments, progress_callback=progress)
    assert not result.is_error and result.structured_content is not None, text_of(result)
    return result.structured_content, text_of(result)


async def test_the_default_cap_is_under_the_typescript_sdks_60_seconds_and_described(server_command: str) -> None:
    assert DEFAULT_UNATTENDED_WAIT_SECONDS < 50
    async with connect(server_command) as client:
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    expected = f"answers within {DEFAULT_UNATTENDED_WAIT_SECONDS:g}s"
    assert expected in tools["wait_for_task"]["properties"]["timeout_seconds"]["description"]
    assert expected in tools["run_background_task"]["properties"]["wait_timeout_seconds"]["description"]


async def test_wait_for_task_without_progress_answers_at_the_cap_and_says_how_to_go_on(server_command: str) -> None:
    async with connect(server_command, env=LOWERED) as client:
        task = await call(client, "run_background_task", command="echo begun; sleep 300")
        waited, text = await _call(
            client, "wait_for_task", task_id=task["task_id"], timeout_seconds=ASKED_UNATTENDED_SECONDS
        )
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert waited["reason"] == "timeout" and waited["waited_seconds"] < ASKED_UNATTENDED_SECONDS / 2
    assert f"stopped after {CAP_SECONDS:g}s of the {ASKED_UNATTENDED_SECONDS:g}s asked" in waited["advice"]
    assert waited["status"]["state"] == "running"
    advice = f"call wait_for_task with task_id={task['task_id']} since={waited['status']['cursor']} timeout_seconds="
    assert advice in waited["advice"] and waited["advice"] in text


@pytest.mark.parametrize("tool", ["wait_for_task", "run_background_task"])
async def test_the_advice_of_a_capped_wait_repeats_its_pattern_and_port_as_json(server_command: str, tool: str) -> None:
    """wait_for_task's advice said only `since`: following it waited for the exit, not for the line or
    the port; a start's cut a pattern longer than 80 characters (ending it with "...") and wrote a C1
    control as `\\x85`, which is not JSON."""
    pattern = 'say "ready" \\d+\t\u202e\x85|' + "a" * 100
    async with connect(server_command, env=LOWERED) as client:
        if tool == "wait_for_task":
            task = await call(client, "run_background_task", command="echo begun; sleep 300")
            waited, _ = await _call(
                client, "wait_for_task", task_id=task["task_id"], timeout_seconds=ASKED_UNATTENDED_SECONDS,
                output_pattern=pattern, port=65000,
            )  # fmt: skip
        else:
            task, _ = await _call(
                client, "run_background_task", command="echo begun; sleep 300", wait_for_pattern=pattern,
                wait_for_port=65000, wait_timeout_seconds=ASKED_UNATTENDED_SECONDS,
            )  # fmt: skip
            waited = task["wait"]
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert waited["reason"] == "timeout"
    advice = waited["advice"]
    argument = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
    given = dict(argument.findall(advice.split("call wait_for_task with ", 1)[1].removesuffix(" to go on waiting")))
    assert set(given) == {"task_id", "output_pattern", "port", "since", "timeout_seconds"}, advice
    assert json.loads(given["output_pattern"]) == pattern and not {"\u202e", "\x85"} & set(advice)
    assert given["task_id"] == task["task_id"] and given["port"] == "65000"
    assert given["since"] == str(waited["status"]["cursor"])
    assert 0 < float(given["timeout_seconds"]) < ASKED_UNATTENDED_SECONDS


async def test_wait_for_task_with_progress_waits_its_whole_length(server_command: str) -> None:
    progress = Progress()
    async with connect(server_command, env=LOWERED) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        waited, _ = await _call(
            client, "wait_for_task", progress, task_id=task["task_id"], timeout_seconds=ASKED_SECONDS
        )
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert waited["reason"] == "timeout" and waited["waited_seconds"] >= ASKED_SECONDS
    assert waited["advice"] is None
    assert len(progress.reports) >= 2 and all(total == ASKED_SECONDS for _, total in progress.reports)


async def test_the_readiness_wait_of_a_start_is_capped_the_same_way(server_command: str) -> None:
    progress = Progress()
    async with connect(server_command, env=LOWERED) as client:
        arguments: dict[str, Any] = {"command": "sleep 300", "wait_for_pattern": "never"}
        quick, text = await _call(
            client, "run_background_task", **arguments, wait_timeout_seconds=ASKED_UNATTENDED_SECONDS
        )
        full, _ = await _call(client, "run_background_task", progress, **arguments, wait_timeout_seconds=ASKED_SECONDS)
        for task in (quick, full):
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert quick["wait"]["reason"] == "timeout" and quick["wait"]["waited_seconds"] < ASKED_UNATTENDED_SECONDS / 2
    assert f'task_id={quick["task_id"]} output_pattern="never" since=' in quick["wait"]["advice"]
    assert quick["wait"]["advice"] in text
    assert full["wait"]["waited_seconds"] >= ASKED_SECONDS and full["wait"]["advice"] is None
    assert progress.reports


async def test_the_first_line_of_a_start_tells_the_state_the_answer_carries(server_command: str) -> None:
    async with connect(server_command) as client:
        started, text = await _call(client, "run_background_task", command="echo done", wait_for_pattern="never")
    assert started["state"] == started["wait"]["status"]["state"] == "completed"
    assert "[completed]" in text.splitlines()[0]


async def test_end_background_task_without_progress_answers_at_the_cap_while_the_task_is_still_ending(
    server_command: str,
) -> None:
    async with connect(server_command, env=LOWERED) as client:
        task = await call(
            client, "run_background_task", command="trap '' TERM; echo ready; sleep 300", wait_for_pattern="ready"
        )
        ending, text = await _call(
            client, "end_background_task", task_id=task["task_id"], grace_seconds=ASKED_UNATTENDED_SECONDS
        )
        during = await call(client, "get_task_status", task_id=task["task_id"])
        ended, _ = await _call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert ending["state"] == during["state"] == "running", ending
    assert ending["advice"] is not None and ending["advice"] in text
    assert f"still ending after {CAP_SECONDS:g}s" in ending["advice"]
    assert f"wait_for_task task_id={task['task_id']}" in ending["advice"]
    assert ended["state"] == "killed" and ended["advice"] is None


async def test_end_background_task_with_progress_answers_once_the_task_is_gone(server_command: str) -> None:
    progress = Progress()
    async with connect(server_command, env=LOWERED) as client:
        task = await call(
            client, "run_background_task", command="trap '' TERM; echo ready; sleep 300", wait_for_pattern="ready"
        )
        ended, text = await _call(
            client, "end_background_task", progress, task_id=task["task_id"], grace_seconds=ASKED_SECONDS
        )
    assert ended["state"] == "killed" and ended["escalated"] and ended["advice"] is None, text
    assert len(progress.reports) >= 2 and all(total == ASKED_SECONDS for _, total in progress.reports)
