"""Taking over what servers on this host left when they died: end the tasks that were not
meant to outlive them, adopt the keep_running ones, settle those that ended meanwhile, and
bring logs that grew past their caps back under them."""

from __future__ import annotations

import functools
from pathlib import Path

import anyio

from .. import offload
from ..logs import holes
from ..models import TaskRecord
from ..platform import backend, heads, process
from ..store import orphans
from . import watchers
from .deadlines import enforce_runtime
from .state import CoreState
from .task import Task
from .watching import watch_adopted


async def take_over_left_behind(state: CoreState) -> list[TaskRecord]:
    """Deal with the tasks of servers on this host that are gone. Answers every record of the
    registry, as read."""
    records = await offload.run(offload.REGISTRY, state.registry.records)
    found = orphans.left_behind([r for r in records if r.host is None], state.owner)
    if found.to_end:
        with anyio.CancelScope(shield=True):
            settings = state.settings
            await orphans.end_orphans(
                found.to_end, settings.shutdown_grace_seconds, settings.shutdown_kill_wait_seconds
            )
    for record in found.to_settle:
        _take_finished(state, record)
    for record in found.to_adopt:
        _adopt(state, record)
    remote = [r for r in records if r.host is not None and r.running and orphans.owner_is_gone(r.owner)]
    for record in remote:
        # The connection is not the task: whatever kind, it ran on; its host says how it stands.
        record.owner = state.owner
        task = state.own[record.task_id] = Task(record, None)
        enforce_runtime(state, task)
        state.remote_exits.track(task)
    state.save([*found.to_end, *found.to_settle, *found.to_adopt, *remote])
    return records


async def cap_grown_logs(records: list[TaskRecord]) -> None:
    """Logs may have grown past their caps while no server ran (a task of a server that was
    SIGKILLed writes on): bring every one of them back under its cap (the registry as read at
    start-up: a log pruned since is gone, and skipped)."""
    logs = [(Path(r.log_path), r.max_log_bytes) for r in records if r.max_log_bytes]
    drop = heads.dropper(backend.current().head_method)
    if capped := await anyio.to_thread.run_sync(holes.enforce_all, logs, drop):
        watchers.report("server", f"capped {capped} log(s) that had grown past their cap while no server ran")


def _take_finished(state: CoreState, record: TaskRecord) -> None:
    """Record how a keep_running task ended between two servers (its runner says) and
    show it as one of ours."""
    orphans.settle_from_runner(record)
    record.owner = state.owner
    task = Task(record, None)
    task.exited.set()
    state.own[record.task_id] = task


def _adopt(state: CoreState, record: TaskRecord) -> None:
    """Take over a keep_running task: watch its runner (not our child) until it ends."""
    assert record.pid is not None
    if not process.same_process(record.pid, record.pid_create_time):
        _take_finished(state, record)  # it ended just now
        return
    record.owner = state.owner
    record.max_runtime_seconds = state.policy.adopted_limit(record.max_runtime_seconds)
    task = Task(record, None)
    state.own[record.task_id] = task
    state.cap(record)
    state.in_background(task, "watching its exit", functools.partial(watch_adopted, state, task))
    enforce_runtime(state, task)
