"""A soak of 2,000 short tasks: the server's open files and memory come back to where they were."""

from __future__ import annotations

import psutil
import pytest
from mcp import Client

from ..e2e.harness import call, connect

pytestmark = [pytest.mark.reliability, pytest.mark.anyio, pytest.mark.timeout(900)]

TASKS = 2_000
WARM_UP = 200
BATCH = 100
MAX_NEW_DESCRIPTORS = 8
MAX_RSS_GROWTH = 24 * 1024 * 1024
"""Finished tasks are kept (in memory and the registry) until pruning, at most once a minute:
a few kilobytes each, well under this."""


def the_server() -> psutil.Process:
    """The server the SDK client started: our child running mcp-backgroundr."""
    found = [p for p in psutil.Process().children() if any("mcp-backgroundr" in part for part in p.cmdline())]
    assert len(found) == 1, found
    return found[0]


async def run_tasks(client: Client, count: int) -> None:
    for _ in range(count // BATCH):
        started = [await call(client, "run_background_task", command="true") for _ in range(BATCH)]
        for task in started:
            waited = await call(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=60)
            assert waited["reason"] == "exited" and waited["status"]["exit_code"] == 0


async def test_2000_short_tasks_leave_no_descriptor_and_little_memory_behind(server_command: str) -> None:
    async with connect(server_command) as client:
        server = the_server()
        await run_tasks(client, WARM_UP)
        descriptors, rss = server.num_fds(), server.memory_info().rss
        await run_tasks(client, TASKS)
        new_descriptors = server.num_fds() - descriptors
        growth = server.memory_info().rss - rss
        print(f"soak of {TASKS} tasks: {new_descriptors:+d} descriptors, RSS {growth / 2**20:+.1f} MiB")
        assert new_descriptors <= MAX_NEW_DESCRIPTORS
        assert growth <= MAX_RSS_GROWTH
