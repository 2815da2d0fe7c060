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
    assert answer.structured_content == model.model_dump(mode="json")
    assert TaskList.model_validate(answer.structured_content) == model
