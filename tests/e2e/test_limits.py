"""Per-task limits enforced by the kernel through the task's cgroup, and refused where they cannot be."""

from __future__ import annotations

import sys

import pytest

from mcp_backgroundr.config import CONTAINMENT_ENV

from .harness import call, call_error, connect, finished

pytestmark = [pytest.mark.anyio, pytest.mark.linux_backend("limits need a cgroup per task: linux backend only")]

MEMORY_LIMIT = 64 * 1024 * 1024
HOG = f"{sys.executable} -c 'data = b\"x\" * (512 << 20); print(len(data))'"
PROCESS_LIMIT = 16
FORK_BOMB = "for i in $(seq 100); do sleep 30 & done; wait"


async def test_a_task_past_max_memory_bytes_is_killed_by_the_kernel_and_failed_naming_the_limit(
    server_command: str,
) -> None:
    async with connect(server_command) as client:
        started = await call(client, "run_background_task", command=HOG, max_memory_bytes=MEMORY_LIMIT)
        assert started["containment"] == "cgroup"
        status = await finished(client, started["task_id"])
        assert status["state"] == "failed"
        assert status["max_memory_bytes"] == MEMORY_LIMIT
        assert f"max_memory_bytes ({MEMORY_LIMIT} bytes) reached" in status["end_reason"], status["end_reason"]
        assert str(512 << 20) not in status["output"]


async def test_a_fork_bomb_stops_at_max_processes_and_the_server_and_other_tasks_go_on(server_command: str) -> None:
    async with connect(server_command) as client:
        neighbour = await call(client, "run_background_task", command="sleep 300")
        bomb = await call(client, "run_background_task", command=FORK_BOMB, max_processes=PROCESS_LIMIT)

        status = await finished(client, bomb["task_id"])  # the shell gives up when it cannot fork
        assert "Cannot fork" in status["output"], status["output"]
        assert status["state"] == "failed"
        assert f"after max_processes ({PROCESS_LIMIT}) was reached: its cgroup refused" in status["end_reason"]
        assert 0 < len(status["lingering_pids"]) < PROCESS_LIMIT
        assert status["max_processes"] == PROCESS_LIMIT
        assert (await call(client, "get_task_status", task_id=neighbour["task_id"]))["state"] == "running"
        after = await call(client, "run_background_task", command="echo still-starting")
        assert "still-starting" in (await finished(client, after["task_id"]))["output"]
        ended = await call(client, "end_background_task", task_id=bomb["task_id"], grace_seconds=0)
        assert ended["survivors"] == []
        assert ended["verified"] == "the task's cgroup is empty"


@pytest.mark.parametrize("level", ["subreaper", "marker"])
async def test_a_limit_that_cannot_be_enforced_is_refused_never_ignored(server_command: str, level: str) -> None:
    async with connect(server_command, env={CONTAINMENT_ENV: level}) as client:
        message = await call_error(client, "run_background_task", command="true", max_memory_bytes=MEMORY_LIMIT)
        assert message.startswith("max_memory_bytes=") and f"{level} level" in message, message
        message = await call_error(client, "run_background_task", command="true", max_processes=PROCESS_LIMIT)
        assert message.startswith("max_processes=") and "drop the limit" in message, message
        assert (await call(client, "list_tasks"))["tasks"] == []


async def test_the_policy_limit_applies_to_every_task_and_caps_what_one_asks(server_command: str) -> None:
    args = ["serve", "--max-processes", str(PROCESS_LIMIT)]
    async with connect(server_command, args=args) as client:
        started = await call(client, "run_background_task", command="true")
        assert (await finished(client, started["task_id"]))["max_processes"] == PROCESS_LIMIT
        message = await call_error(client, "run_background_task", command="true", max_processes=PROCESS_LIMIT + 1)
        assert "max_processes" in message and f"ask for {PROCESS_LIMIT} or less" in message, message
