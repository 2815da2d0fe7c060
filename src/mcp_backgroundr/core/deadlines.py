"""max_runtime_seconds: ending a task once it has run for its limit."""

from __future__ import annotations

import functools
import time

import anyio

from ..errors import plain_number
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
            await end(state, task.record.task_id, state.settings.default_grace_seconds)
            task.record.say_why_it_ended(f"{runtime_reason(limit)}: ended the processes it left behind")
            state.save([task.record])
