"""End-to-end: one client's costly call costs the other clients nothing.

Patterns from clients run in linear time (RE2): the classic catastrophic pattern
``(a+)+$`` against a line of many ``a`` and a ``b`` takes Python's ``re`` longer than
the age of the universe at 60 characters; here it answers at once, and a concurrent
call is answered meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from mcp import Client

from .harness import call, call_error, connect, finished

pytestmark = pytest.mark.anyio

HOSTILE = "(a+)+$"
LINE = "a" * 60 + "b"
ANSWER_BOUND_SECONDS = 20.0
"""Generous: with a backtracking engine neither call would ever be answered."""


async def _answered_meanwhile(client: Client, slow: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``slow`` while another call lists the tasks; both must be answered."""
    answer: dict[str, Any] = {}

    async def run_slow() -> None:
        answer.update(await slow())

    with anyio.fail_after(ANSWER_BOUND_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(run_slow)
            listing = await call(client, "list_tasks")
            assert listing["total"] >= 1
    return answer


async def test_a_hostile_grep_pattern_blocks_nobody(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=f"printf '{LINE}\\n'")
        await finished(client, task["task_id"])

        async def grep() -> dict[str, Any]:
            return await call(client, "get_task_status", task_id=task["task_id"], grep=HOSTILE)

        status = await _answered_meanwhile(client, grep)
    assert status["grep_matches"] == 0


async def test_a_hostile_output_pattern_blocks_nobody(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=f"printf '{LINE}\\n'; sleep 300")

        async def wait() -> dict[str, Any]:
            return await call(
                client, "wait_for_task", task_id=task["task_id"], output_pattern=HOSTILE, since=0, timeout_seconds=1
            )

        result = await _answered_meanwhile(client, wait)
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert result["reason"] == "timeout"


async def test_a_hostile_wait_for_pattern_blocks_nobody(server_command: str) -> None:
    async with connect(server_command) as client:
        await call(client, "run_background_task", command="sleep 300", name="bystander")

        async def start() -> dict[str, Any]:
            return await call(
                client,
                "run_background_task",
                command=f"printf '{LINE}\\n'; sleep 300",
                wait_for_pattern=HOSTILE,
                wait_timeout_seconds=1,
            )

        started = await _answered_meanwhile(client, start)
        for task in (await call(client, "list_tasks"))["tasks"]:
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert started["wait"]["reason"] == "timeout"


@pytest.mark.parametrize("pattern", [r"(a)\1", "x(?=y)", "(?<!x)y"])
async def test_patterns_beyond_re2_are_refused_in_one_line(server_command: str, pattern: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo hi; sleep 300")
        task_id = task["task_id"]
        errors = [
            await call_error(client, "get_task_status", task_id=task_id, grep=pattern),
            await call_error(client, "wait_for_task", task_id=task_id, output_pattern=pattern),
            await call_error(client, "run_background_task", command="true", wait_for_pattern=pattern),
        ]
        await call(client, "end_background_task", task_id=task_id, grace_seconds=0)
        listing = await call(client, "list_tasks")
    for field, message in zip(("grep", "output_pattern", "wait_for_pattern"), errors, strict=True):
        assert message.startswith(f"{field}="), message
        assert "RE2 syntax" in message, message
    assert listing["total"] == 1, "a refused wait_for_pattern must not start its task"


CONCURRENT_WAITS = 200
"""More than the default per-user limit of inotify instances (128)."""


async def test_hundreds_of_concurrent_pattern_waits_share_one_inotify_instance(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="read go; echo ready; sleep 300", stdin=True)
        task_id = task["task_id"]
        reasons: list[str] = []

        async def wait() -> None:
            result = await call(
                client, "wait_for_task", task_id=task_id, output_pattern="ready", since=0, timeout_seconds=60
            )
            reasons.append(result["reason"])

        with anyio.fail_after(ANSWER_BOUND_SECONDS * 2):
            async with anyio.create_task_group() as group:
                for _ in range(CONCURRENT_WAITS):
                    group.start_soon(wait)
                # Sent after every wait: most of them are waiting when the line comes.
                await call(client, "send_task_input", task_id=task_id, text="go")
        await call(client, "end_background_task", task_id=task_id, grace_seconds=0)
    assert reasons == ["pattern"] * CONCURRENT_WAITS
