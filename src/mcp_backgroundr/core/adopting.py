"""Taking over what servers left when they died, at every place (here: end the tasks that
were not meant to outlive them, adopt the keep_running ones, settle those that ended
meanwhile), and bringing logs that grew past their caps back under them."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from .. import offload
from ..logs import holes
from ..models import TaskRecord
from ..platform import backend, heads, process
from ..store import orphans
from . import watchers
from .deadlines import enforce_runtime
from .place import Place, TakenOver
from .state import CoreState
from .task import Task
from .watching import watch_adopted


async def take_over_left_behind(
    state: CoreState, records: list[TaskRecord], places: Sequence[Place] | None = None
) -> bool:
    """Deal with the tasks of servers that are gone, at every place (or those of ``places``;
    ``records``: every record of the registry, as read: those changed are changed in place).
    Whether any was."""
    changed = False
    for place in state.places if places is None else places:
        taken = await place.take_over([r for r in records if state.place_of(r) is place])
        for task in taken.adopted:
            state.own[task.record.task_id] = task
            enforce_runtime(state, task)
        state.save(taken.changed)
        changed = changed or bool(taken.changed)
    return changed


async def take_over_gone_here(state: CoreState, records: list[TaskRecord] | None = None) -> None:
    """While this server runs, take over this machine's tasks of servers that died since it
    started (one crashed beside it), as a starting server does: else they run on unended until
    a server starts. ``records``: the registry as just read (None: read it now); what is taken
    over is changed in them, so a listing of them shows it without reading the registry again."""
    if records is None:
        records = await offload.run(offload.REGISTRY, state.registry.records)
    if await take_over_left_behind(state, records, (state.here,)):
        # What it recorded is written by the registry's thread: a call that reads the registry
        # next (a status) read the task as still running, found it gone, and took it for failed.
        await offload.run(offload.REGISTRY, state.registry.flush)


async def take_over_here(state: CoreState, records: Sequence[TaskRecord]) -> TakenOver:
    """The tasks on this machine of servers on it that are gone: end those that were not meant
    to outlive them, settle those that ended meanwhile, adopt the keep_running ones."""
    found = await offload.run(offload.SCANS, orphans.left_behind, list(records), state.owner)
    # Servers starting at the same moment find the same tasks: only the one that claims a task
    # takes it over. Those ended are not claimed: ending twice records one end (the first).
    found.keep_only(await state.claim([*found.to_adopt, *found.to_settle]))
    if found.to_end:
        with anyio.CancelScope(shield=True):
            settings = state.settings
            await orphans.end_orphans(
                found.to_end, settings.shutdown_grace_seconds, settings.shutdown_kill_wait_seconds
            )
    # They ended while no server watched them: their runners may have recorded when; if not, when
    # is not known, only between which times.
    found_gone_at = time.time()
    await offload.run(offload.LOGS, _settle_from_runners, found.to_settle, found_gone_at)
    for record in found.to_settle:
        _own_finished(state, record)
    running = await offload.run(offload.SCANS, _still_running, found.to_adopt)
    ended_now = [r for r in found.to_adopt if r.task_id not in running]  # seen ending now: no window
    await offload.run(offload.LOGS, _settle_from_runners, ended_now, None)
    adopted = [task for record in found.to_adopt if (task := _adopt(state, record, running)) is not None]
    # Tasks that ended while no server watched them, now or before (settled by a server that
    # did not remove their cgroups then): none keeps an empty cgroup.
    await offload.run(offload.CGROUPS, orphans.remove_empty_cgroups, [r for r in records if not r.running])
    return TakenOver(changed=[*found.to_end, *found.to_settle, *found.to_adopt], adopted=adopted)


async def cap_grown_logs(records: list[TaskRecord]) -> None:
    """Logs may have grown past their caps while no server ran (a task of a server that was
    SIGKILLed writes on): bring every one of them back under its cap (the registry as read at
    start-up: a log pruned since is gone, and skipped)."""
    logs = [(Path(r.log_path), r.max_log_bytes) for r in records if r.max_log_bytes]
    drop = heads.dropper(backend.current().head_method)
    if capped := await anyio.to_thread.run_sync(holes.enforce_all, logs, drop):
        watchers.report("server", f"capped {capped} log(s) that had grown past their cap while no server ran")


def _settle_from_runners(records: Sequence[TaskRecord], found_gone_at: float | None) -> None:
    """Record how keep_running tasks found ended at ``found_gone_at`` (None: seen ending now) ended,
    as their runners say (blocking: it reads their run records)."""
    for record in records:
        orphans.settle_from_runner(record, found_gone_at)


def _own_finished(state: CoreState, record: TaskRecord) -> None:
    """Show a keep_running task that ended between two servers, settled, as one of ours."""
    record.owner = state.owner
    task = Task(record, None)
    task.exited.set()
    state.own[record.task_id] = task


def _still_running(records: list[TaskRecord]) -> set[str]:
    """The ids of those ``records`` whose process still runs (blocking: a look at each in /proc)."""
    return {r.task_id for r in records if r.pid is not None and process.same_process(r.pid, r.pid_create_time)}


def _adopt(state: CoreState, record: TaskRecord, running: set[str]) -> Task | None:
    """Take over a keep_running task: watch its runner (not our child) until it ends (None: it
    ended just now, and is settled). ``running``: the ids of the tasks found running just now."""
    assert record.pid is not None
    if record.task_id not in running:
        _own_finished(state, record)  # it ended just now: settled from its runner's record already
        return None
    record.owner = state.owner
    record.max_runtime_seconds = state.policy.adopted_limit(record.max_runtime_seconds)
    task = Task(record, None)
    state.own[record.task_id] = task
    state.cap(record)
    state.in_background(task, "watching its exit", functools.partial(watch_adopted, state, task))
    return task
