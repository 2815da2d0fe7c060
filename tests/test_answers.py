"""Tool answers built from the core's plain data say what their pydantic models would."""

from __future__ import annotations

import dataclasses

from mcp_backgroundr.models import TaskList, TaskState
from mcp_backgroundr.results import Listing, Summary
from mcp_backgroundr.tools.answers import describe_list, listing_answer, model_of

BASE = Summary(
    task_id="bg-0",
    name=None,
    command="sleep 600",
    state=TaskState.RUNNING,
    pid=41,
    exit_code=None,
    started_at="2026-11-30T05:00:00.000+00:00",
    runtime_seconds=1.5,
    listening=[],
    owner="box:1:2",
    containment="marker",
    host=None,
)


def test_the_listing_answer_is_what_the_task_list_model_dumps() -> None:
    listing = Listing(
        tasks=[
            dataclasses.replace(BASE, task_id="bg-1", name="web", listening=["127.0.0.1:8000", "[::1]:8000"]),
            dataclasses.replace(
                BASE, task_id="bg-2", state=TaskState.FAILED, exit_code=2, pid=None, host="build", containment="cgroup"
            ),
        ],
        total=3,
    )
    model = model_of(TaskList, listing)
    answer = listing_answer(listing, describe_list(listing))
    dumped = model.model_dump(mode="json")
    without_absent = [
        {key: value for key, value in task.items() if value not in (None, [])} for task in dumped["tasks"]
    ]
    assert answer.structured_content == {**dumped, "tasks": without_absent}
    assert TaskList.model_validate(answer.structured_content) == model


def test_a_listed_line_leaves_out_only_what_its_task_does_not_have() -> None:
    remote = dataclasses.replace(
        BASE, exit_code=0, host="build", host_reachable=False, host_seen_at="2026-11-30T05:00:01"
    )
    answer = listing_answer(Listing(tasks=[BASE, remote], total=2), "")
    assert answer.structured_content is not None
    local, far = answer.structured_content["tasks"]
    assert set(local) == {"task_id", "command", "state", "pid", "started_at", "runtime_seconds", "owner", "containment"}
    assert (far["exit_code"], far["host"], far["host_reachable"]) == (0, "build", False)
