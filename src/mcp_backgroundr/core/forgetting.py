"""Forgetting finished tasks: remove_task, and pruning beyond the retention settings."""

from __future__ import annotations

import functools
import sys
import time

from .. import offload
from ..errors import BackgroundrError, RegistryError
from ..models import TaskRecord
from ..results import Removed
from ..store import orphans, retention
from . import watchers
from .lookup import find_task
from .state import CoreState, TaskChange

PRUNE_INTERVAL_SECONDS = 60.0
"""Pruning reads the whole registry: after exits it runs at most this often."""


async def prune_now(state: CoreState) -> None:
    """Forget finished tasks beyond the retention settings, with their logs (the registry is
    read and written in a worker thread); remote tasks' files are deleted on their hosts."""
    state.pruned_at = time.monotonic()
    try:
        keep, days = state.settings.keep_finished, state.settings.keep_days
        pruned = await offload.run(offload.REGISTRY, retention.prune, state.registry, keep, days)
    except RegistryError as exc:
        print(f"mcp-backgroundr: {exc}", file=sys.stderr)
        return
    for record in pruned:
        state.forget(record)
    if remote := [r for r in pruned if r.host is not None]:
        forgetting = functools.partial(_forget_remote, state, remote)
        state.in_background(None, "deleting forgotten tasks' files on their hosts", forgetting)


async def _forget_remote(state: CoreState, records: list[TaskRecord]) -> None:
    for left in await state.remote.forget(records):
        watchers.report("server", left)


def prune_if_due(state: CoreState) -> None:
    """Prune soon, in the background, if it has not been done for PRUNE_INTERVAL_SECONDS."""
    if not state.shutting_down and time.monotonic() - state.pruned_at >= PRUNE_INTERVAL_SECONDS:
        state.pruned_at = time.monotonic()
        state.in_background(None, "pruning finished tasks", functools.partial(prune_now, state))


async def remove(state: CoreState, task_id: str) -> Removed:
    """Forget a finished task and delete its log: one of ours, or one whose server is gone."""
    task = await find_task(state, task_id)
    if task.running or (task.record.host is None and await task.lingering()):
        raise BackgroundrError(
            f"task {task_id} is still running; end it with end_background_task first, then remove it"
        )
    if task_id not in state.own and not orphans.owner_is_gone(task.record.owner):
        raise BackgroundrError(
            f"task {task_id} belongs to a server that still runs ({task.record.owner}), which shows it; "
            "remove it there, or once that server has exited"
        )
    if task.record.host is not None:
        freed = await state.remote.remove(task)
    await offload.run(offload.REGISTRY, state.registry.delete, task_id)
    if task.record.host is None:
        # Unlinking a big log frees its blocks (and discards them, on some disks): not on the event loop.
        freed = await offload.run(offload.LOGS, retention.delete_task_files, task.record)
    state.forget(task.record)
    state.changed(TaskChange.REMOVED, task_id)
    return Removed(task_id=task_id, freed_bytes=freed)
