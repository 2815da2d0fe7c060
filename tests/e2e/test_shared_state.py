"""End-to-end: two servers on one state directory at once."""

from __future__ import annotations

import pytest

from .harness import alive, call, connect

pytestmark = pytest.mark.anyio


async def test_two_servers_see_their_own_tasks_and_can_reach_each_others(server_command: str) -> None:
    async with connect(server_command) as first, connect(server_command) as second:
        mine = await call(first, "run_background_task", command="echo first; sleep 300", wait_for_pattern="first")
        theirs = await call(second, "run_background_task", command="sleep 300")
        own_view = await call(second, "list_tasks")
        everything = await call(second, "list_tasks", all=True)
        status = await call(second, "get_task_status", task_id=mine["task_id"])
        waited = await call(second, "wait_for_task", task_id=mine["task_id"], output_pattern="first", since=0)
        ended = await call(second, "end_background_task", task_id=mine["task_id"])
        seen_by_owner = await call(first, "get_task_status", task_id=mine["task_id"])
    assert [t["task_id"] for t in own_view["tasks"]] == [theirs["task_id"]]
    listed = {t["task_id"]: t["owner"] for t in everything["tasks"]}
    assert set(listed) == {mine["task_id"], theirs["task_id"]}
    assert listed[mine["task_id"]] != listed[theirs["task_id"]]
    assert (status["state"], status["output"]) == ("running", "first\n")
    assert waited["reason"] == "pattern"
    assert ended["state"] == "killed"
    assert ended["survivors"] == []
    assert seen_by_owner["state"] == "killed"
    assert seen_by_owner["kill_requested"] is True
    assert alive([mine["pid"], theirs["pid"]]) == []
