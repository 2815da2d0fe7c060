"""Recording a task's exit: its state, exit code or signal, and why it ended."""

from __future__ import annotations

import contextlib
import time

from .. import exits
from ..errors import RegistryError
from ..models import TaskState
from .state import CoreState
from .task import Task


def memory_reason(limit: int | None) -> str:
    return f"killed by the kernel: max_memory_bytes ({limit} bytes) reached (its cgroup counted an oom_kill)"


def refresh(state: CoreState, task: Task) -> None:
    """Record an exit that happened since the event loop last looked (a single waitpid)."""
    if task.running and task.popen is not None and (returncode := task.popen.poll()) is not None:
        record_exit(state, task, returncode)


def refresh_all(state: CoreState) -> None:
    for task in state.own.values():
        refresh(state, task)


def record_exit(state: CoreState, task: Task, returncode: int, oom_kills: int | None = None) -> None:
    """Record how the task's main process ended (once), and wake whoever waits on it.

    ``oom_kills``: the kernel's count of memory kills in the task's cgroup, read beforehand in a
    worker thread (read here when not given)."""
    if not task.running:
        return
    record = task.record
    if not record.kill_requested:
        # Another server or the CLI may have ended it: it says so in the registry first.
        with contextlib.suppress(RegistryError):
            fresh = state.registry.get(record.task_id)
            if fresh is not None and fresh.kill_requested:
                record.kill_requested, record.end_reason = True, fresh.end_reason
    record.ended_at = time.time()
    ended = exits.of(returncode, asked_to_end=record.kill_requested)
    record.state, record.exit_code, record.signal = TaskState(ended.state), ended.exit_code, ended.signal
    if (
        not record.kill_requested
        and task.cgroup is not None
        and (task.cgroup.oom_kills() if oom_kills is None else oom_kills)
    ):
        record.state, record.end_reason = TaskState.FAILED, memory_reason(record.max_memory_bytes)
    task.close_input_pipe()
    task.exited.set()
    if not state.shutting_down:
        state.save([record])
