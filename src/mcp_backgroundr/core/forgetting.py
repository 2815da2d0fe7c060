"""Forgetting finished tasks: remove_task, and pruning beyond the retention settings."""

from __future__ import annotations

import functools
import time

from .. import offload
from ..errors import BackgroundrError, RegistryError, TaskNotFoundError, warn
from ..models import TaskRecord
from ..results import Removed
from ..store import retention
from . import watchers
from .lookup import find_task, owner_gone, read_record
from .state import CoreState, TaskChange

PRUNE_INTERVAL_SECONDS = 60.0
"""Pruning reads the whole registry: after exits it runs at most this often."""


async def prune_now(state: CoreState) -> None:
    """Forget finished tasks beyond the retention settings, with their logs (the registry is
    read and written in a worker thread); remote tasks' files are deleted on their hosts, in the
    background."""
    state.pruned_at = time.monotonic()
    try:
        pruned = await prune(state, state.settings.keep_finished, state.settings.keep_days)
    except RegistryError as exc:
        warn(str(exc))
        return
    if pruned:
        forgetting = functools.partial(_report_left, state, pruned)
        state.in_background(None, "deleting what is left of forgotten tasks", forgetting)


async def prune(state: CoreState, keep: int, days: float) -> list[TaskRecord]:
    """Forget the finished tasks beyond the newest ``keep`` and older than ``days``, with their
    logs here (in a worker thread; raises RegistryError); the records forgotten."""
    pruned = await offload.run(offload.REGISTRY, retention.prune, state.registry, keep, days, state.owner)
    for record in pruned:
        state.forget(record)
    return pruned


async def forget_at_places(state: CoreState, records: list[TaskRecord]) -> list[str]:
    """Delete what is left of forgotten tasks at each place (a remote one: on their hosts); a line
    for each place whose files were left."""
    left: list[str] = []
    for place in state.places:
        if at_place := [r for r in records if state.place_of(r) is place]:
            left += await place.forget(at_place)
    return left


async def _report_left(state: CoreState, records: list[TaskRecord]) -> None:
    for left in await forget_at_places(state, records):
        watchers.report("server", left)


def prune_if_due(state: CoreState) -> None:
    """Prune soon, in the background, if it has not been done for PRUNE_INTERVAL_SECONDS."""
    if not state.shutting_down and time.monotonic() - state.pruned_at >= PRUNE_INTERVAL_SECONDS:
        state.pruned_at = time.monotonic()
        state.in_background(None, "pruning finished tasks", functools.partial(prune_now, state))


async def remove(state: CoreState, task_id: str) -> Removed:
    """Forget a finished task and delete its log: one of ours, or one whose server is gone."""
    task = await find_task(state, task_id)
    place = state.place_of(task.record)
    if task.running:
        raise BackgroundrError(
            f"task {task_id} is still running; end it with end_background_task first, then remove it"
        )
    if await place.lingering(task):
        raise BackgroundrError(
            f"task {task_id} has exited, but processes it started still run (it lingers); end them with "
            "end_background_task first, then remove it"
        )
    if task_id not in state.own and not await owner_gone(task.record.owner):
        raise BackgroundrError(
            f"task {task_id} belongs to a server that still runs ({task.record.owner}), which shows it; "
            "remove it there, or once that server has exited"
        )
    if task_id in state.removing:
        raise BackgroundrError(f"task {task_id} is being removed by another call; list_tasks shows what is left")
    state.removing.add(task_id)
    try:
        if await read_record(state, task_id) is None:  # removed by a call that ended while this one looked
            raise TaskNotFoundError(task_id)
        unregister = functools.partial(offload.run, offload.REGISTRY, state.registry.delete, task_id)
        freed = await place.remove(task, unregister)
    finally:
        state.removing.discard(task_id)
    state.forget(task.record)
    state.changed(TaskChange.REMOVED, task_id)
    return Removed(task_id=task_id, freed_bytes=freed)
