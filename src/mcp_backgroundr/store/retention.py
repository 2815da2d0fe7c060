"""Pruning finished tasks, with their logs, so the state directory never grows without bound."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path

from ..errors import RegistryFullError
from ..models import TaskRecord
from ..platform.containment import TaskCgroup
from . import orphans
from .registry import Registry

SECONDS_PER_DAY = 86_400
BLOCK_BYTES = 512
"""The unit of ``st_blocks``."""


def prunable(records: Collection[TaskRecord], keep: int, max_age_days: float, now: float) -> list[TaskRecord]:
    """Finished tasks beyond the newest ``keep``, or older than ``max_age_days``, oldest first."""
    finished = sorted((r for r in records if not r.running), key=lambda r: r.started_at, reverse=True)
    cutoff = now - max_age_days * SECONDS_PER_DAY
    chosen = [r for index, r in enumerate(finished) if index >= keep or (r.ended_at or r.started_at) < cutoff]
    return chosen[::-1]


def allocated_bytes(path: Path) -> int:
    """What ``path`` takes on its disk (its allocated blocks: a capped log's dropped head is a
    hole, and takes nothing)."""
    return path.stat().st_blocks * BLOCK_BYTES


def delete_task_files(record: TaskRecord) -> int:
    """Delete a task's log, runner status and input home, and its cgroup if it is empty (a
    finished task's processes may have ended with nobody looking); return the bytes freed on
    the disk (allocated blocks, not sizes).

    A remote task's files are on its host: remove_task and pruning delete them there
    (``RemoteTasks``), and the host's agent prunes its own.
    """
    if record.host is not None:
        return 0
    cgroup = TaskCgroup.decode(record.cgroup)
    if cgroup is not None:
        cgroup.remove()
    freed = 0
    for path in map(Path, (record.log_path, record.run_record_path, record.input_path, record.end_seen_path)):
        try:
            freed += allocated_bytes(path)
            path.unlink()
        except FileNotFoundError:
            continue
    return freed


def prune(registry: Registry, keep: int, max_age_days: float, pruner: str) -> list[TaskRecord]:
    """Forget the prunable tasks of the whole registry and delete their files: those of ``pruner``
    (a server's own id) and of servers that are gone. A finished task of another server that still
    runs is left to it: that server still shows the task, and would answer for it with no output."""
    records = [orphans.as_it_stands(r) for r in registry.records()]  # one that ended unseen is finished
    chosen = prunable(records, keep, max_age_days, time.time())
    pruned = [r for r in chosen if r.owner == pruner or orphans.owner_is_gone(r.owner)]
    for record in pruned:
        forget(registry.delete, record)
    return pruned


def forget(unregister: Callable[[str], None], record: TaskRecord) -> int:
    """Forget a finished task (``unregister`` deletes its record) and delete its files; the bytes
    freed. The record goes first, so no reader finds a record whose log is gone; but on a full disk
    the registry cannot be written until space is freed, and the files go first."""
    try:
        unregister(record.task_id)
    except RegistryFullError:
        freed = delete_task_files(record)
        unregister(record.task_id)
        return freed
    return delete_task_files(record)
