"""End-to-end: nothing that happens to one task can take the server down (issue 10, "never die").

Each test injects one fault through the real server and checks that the fault is recorded on
its task, that the server still answers, and that another task running beside it is untouched.
"""

from __future__ import annotations

import pytest
from mcp import Client

from .harness import call, connect, finished

pytestmark = pytest.mark.anyio

REAL_TIME_SIGNALS = (34, 40, 50, 63, 64)


async def _still_serving(client: Client, bystander: str) -> None:
    """The server answers, and the task beside the fault still runs."""
    listing = await call(client, "list_tasks", all=True)
    assert listing["total"] >= 1
    assert (await call(client, "get_task_status", task_id=bystander))["state"] == "running"


@pytest.mark.parametrize("signum", REAL_TIME_SIGNALS)
async def test_a_task_killed_by_a_real_time_signal_is_recorded_and_the_server_lives_on(
    server_command: str, signum: int
) -> None:
    async with connect(server_command) as client:
        bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        task = await call(client, "run_background_task", command=f"kill -s {signum} $$")
        status = await finished(client, task["task_id"])
        await _still_serving(client, bystander)
    assert status["state"] == "failed"
    assert status["exit_code"] == 128 + signum
    assert status["signal"] == _expected_name(signum)


@pytest.mark.parametrize("restart", ["no", "always"])
async def test_a_supervised_task_killed_by_a_real_time_signal_is_recorded(server_command: str, restart: str) -> None:
    async with connect(server_command) as client:
        bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        limit = {"max_restarts": 1} if restart != "no" else {}
        task = await call(
            client, "run_background_task", command="kill -s 40 $$", keep_running=True, restart=restart, **limit
        )
        status = await finished(client, task["task_id"])
        await _still_serving(client, bystander)
    assert (status["state"], status["exit_code"], status["signal"]) == ("failed", 168, "SIGRTMIN+6")
    assert status["restarts"] == (1 if restart == "always" else 0)


def _expected_name(signum: int) -> str:
    if signum == 34:
        return "SIGRTMIN"
    if signum == 64:
        return "SIGRTMAX"
    return f"SIGRTMIN+{signum - 34}"
