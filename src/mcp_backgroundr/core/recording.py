"""Recording a task's exit: its state, exit code or signal, and why it ended."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import exits, offload
from ..errors import RegistryError
from ..models import TaskRecord, TaskState
from ..platform import process
from ..platform.containment import LimitsHit
from ..store.registry import LOW_SPACE_BYTES
from .state import CoreState
from .task import Task


def memory_reason(limit: int | None) -> str:
    return f"killed by the kernel: max_memory_bytes ({limit} bytes) reached (its cgroup counted an oom_kill)"


def processes_reason(exit_code: int | None, limit: int | None, refused: int) -> str:
    return (
        f"exited with code {exit_code} after max_processes ({limit}) was reached: its cgroup refused "
        f"{refused} fork{'s' if refused != 1 else ''}"
    )


async def refresh(state: CoreState, task: Task) -> None:
    """Record an exit that happened since the event loop last looked (a single waitpid)."""
    if task.running and task.popen is not None and (returncode := task.popen.poll()) is not None:
        await record_exit_when_read(state, task, returncode)


async def refresh_all(state: CoreState) -> None:
    """:func:`refresh` for every task of this server, with one system call when none of its
    children has ended (a task whose exit was waited for, but not yet recorded, is refreshed)."""
    ended = process.a_child_has_ended()
    for task in list(state.own.values()):
        if ended or (task.popen is not None and task.popen.returncode is not None):
            await refresh(state, task)


async def record_exit_when_read(state: CoreState, task: Task, returncode: int) -> None:
    """:func:`record_exit`, once what it needs is read in worker threads: the registry's record
    (another server or the CLI may have asked for the end) and the cgroup's counts of the limits
    the kernel enforced."""
    told = None if task.record.kill_requested else await _registry_record(state, task.record.task_id)
    cgroup = task.cgroup
    limits_hit = LimitsHit() if cgroup is None else await offload.run(offload.CGROUPS, cgroup.limits_hit)
    full = None if returncode == 0 else await offload.run(offload.LOGS, _full_disk_free, Path(task.record.log_path))
    record_exit(state, task, returncode, limits_hit, told)
    if full is not None and task.record.state is TaskState.FAILED and not task.record.kill_requested:
        task.record.say_why_it_ended(full_disk_reason(task.record.exit_code, full))
        if not state.shutting_down:
            state.save([task.record])


def full_disk_reason(exit_code: int | None, free: int) -> str:
    return (
        f"exited with code {exit_code} while the disk of its log was full ({free} bytes free): its output could "
        "not all be written (No space left on device), which may be why; remove_task frees the logs of "
        "finished tasks"
    )


def _full_disk_free(log: Path) -> int | None:
    """The free bytes of the disk that holds ``log``, when it is full (less than LOW_SPACE_BYTES)."""
    try:
        info = os.statvfs(log.parent)
    except OSError:
        return None
    free = info.f_bavail * info.f_frsize
    return free if free < LOW_SPACE_BYTES else None


async def _registry_record(state: CoreState, task_id: str) -> TaskRecord | None:
    """The task's record as the registry holds it (None when it cannot be read)."""
    try:
        return await offload.run(offload.REGISTRY, state.registry.get, task_id)
    except RegistryError:
        return None


def record_exit(state: CoreState, task: Task, returncode: int, limits_hit: LimitsHit, told: TaskRecord | None) -> None:
    """Record how the task's main process ended (once), and wake whoever waits on it.

    ``limits_hit``: the kernel's counts of memory kills and refused forks in the task's cgroup; ``told``: the task's
    record as the registry held it, where another server or the CLI says so first when it ended
    the task (both read beforehand in worker threads)."""
    if not task.running:
        return
    record = task.record
    if not record.kill_requested and told is not None and told.kill_requested:
        record.kill_requested, record.end_reason = True, told.end_reason
    record.ended_at = time.time()
    ended = exits.of(returncode, asked_to_end=record.kill_requested)
    record.state, record.exit_code, record.signal = TaskState(ended.state), ended.exit_code, ended.signal
    if not record.kill_requested and limits_hit.oom_kills:
        record.state = TaskState.FAILED
        record.say_why_it_ended(memory_reason(record.max_memory_bytes))
    elif not record.kill_requested and limits_hit.forks_refused and record.state is TaskState.FAILED:
        record.say_why_it_ended(processes_reason(record.exit_code, record.max_processes, limits_hit.forks_refused))
    task.close_input_pipe()
    task.exited.set()
    if not state.shutting_down:
        state.save([record])
