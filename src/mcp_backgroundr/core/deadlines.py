"""max_runtime_seconds: ending a task once it has run for its limit."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import anyio

from ..errors import plain_number
from ..results import Survivor, survivors_text
from .ending import end
from .state import CoreState
from .task import Task


def runtime_reason(limit: float) -> str:
    return f"max_runtime_seconds ({plain_number(limit)} s) reached"


def enforce_runtime(state: CoreState, task: Task) -> None:
    """End ``task`` at its runtime limit, if it has one."""
    if task.record.max_runtime_seconds is not None and state.group is not None:
        limit = task.record.max_runtime_seconds
        state.in_background(task, "enforcing max_runtime_seconds", functools.partial(_end_at, state, task, limit))


async def _end_at(state: CoreState, task: Task, limit: float) -> None:
    """End the task once it has run for ``limit`` seconds (counted from its first start),
    and so the processes it left behind if its main process ended sooner."""
    await anyio.sleep(max(0.0, task.record.started_at + limit - time.time()))
    if state.shutting_down or state.own.get(task.record.task_id) is not task:
        return
    if task.running:
        await end(state, task.record.task_id, state.settings.default_grace_seconds, runtime_reason(limit))
    elif await state.place_of(task.record).lingering(task):  # looked for where the task ran
        async with task.ending_leftovers():
            ended = await end(state, task.record.task_id, state.settings.default_grace_seconds)
            task.record.say_why_it_ended(f"{runtime_reason(limit)}: {leftovers_ended_text(ended.survivors)}")
            state.save([task.record])


def leftovers_ended_text(survivors: Sequence[Survivor]) -> str:
    """What an end of the processes a finished task left behind did, survivors named."""
    if not survivors:
        return "ended the processes it left behind"
    count = f"{len(survivors)} process{'es' if len(survivors) > 1 else ''}"
    return f"{count} it left behind outlived its end: {survivors_text(survivors)}"
