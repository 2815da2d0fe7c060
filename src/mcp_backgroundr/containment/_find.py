"""Finding a task's processes: its cgroup's members, else a scan of the machine's processes.

Without a cgroup, a process belongs to a task when any of these holds: it is in the task's
session or process group (the task's shell leads both), it carries the task's marker
``MCP_BACKGROUNDR_TASK_ID``, it descends from the task's leader, or an earlier scan saw it
as the task's (a process orphaned to us, the subreaper, keeps its task that way). Linux
does not reuse a pid while it still names a session or group, and psutil checks a
process's start time before signalling it, so a reused pid is never signalled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import psutil

from ..config import TASK_ID_ENV
from ._cgroup import TaskCgroup

MAX_ANCESTRY = 64
"""How far up the parent chain a scan looks for a task's leader."""


@dataclass(frozen=True)
class Leader:
    """The process that leads a task's session and process group, and the task's cgroup."""

    task_id: str
    reaped_at: float | None = None
    """When its exit was collected; after that its pid may name a new, unrelated process."""
    cgroup: TaskCgroup | None = None
    """The task's cgroup: its members are exactly the task's processes."""


_lineage: dict[int, tuple[float, str]] = {}
"""pid -> (start time, task id) of every process a scan attributed to a task."""
_lineage_lock = threading.Lock()
"""Scans run in worker threads too (ending trees)."""


def is_gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _cgroup_members(cgroup: TaskCgroup) -> list[psutil.Process]:
    found = []
    for pid in cgroup.members():
        try:
            candidate = psutil.Process(pid)
        except psutil.Error:
            continue
        if not is_gone(candidate):
            found.append(candidate)
    return found


class _Scan:
    """One pass over the machine's processes, attributing each to a task where it can."""

    def __init__(self, leaders: Mapping[int, Leader]) -> None:
        self.leaders = leaders
        self.wanted = {leader.task_id for leader in leaders.values()}
        self.own_pid = os.getpid()
        self.processes = {p.pid: p for p in psutil.process_iter(["environ", "ppid", "create_time"], ad_value=None)}
        self.memo: dict[int, str | None] = {}

    def task_of(self, candidate: psutil.Process) -> str | None:
        if candidate.pid not in self.memo:
            self.memo[candidate.pid] = (
                self._by_marker(candidate)
                or self._by_session(candidate)
                or self._by_ancestry(candidate)
                or self._by_lineage(candidate)
            )
        return self.memo[candidate.pid]

    def _by_marker(self, candidate: psutil.Process) -> str | None:
        environ = candidate.info.get("environ")
        if environ and environ.get(TASK_ID_ENV) in self.wanted:
            return str(environ[TASK_ID_ENV])
        return None

    def _leader_for(self, number: int, candidate: psutil.Process) -> str | None:
        leader = self.leaders.get(number)
        if leader is None:
            return None
        # Once the leader is reaped its pid can be reused, and a new process that calls
        # setsid would lead a session of that number: only older processes are the task's.
        started = candidate.info.get("create_time")
        if leader.reaped_at is not None and (started is None or started >= leader.reaped_at):
            return None
        return leader.task_id

    def _by_session(self, candidate: psutil.Process) -> str | None:
        try:
            session, group = os.getsid(candidate.pid), os.getpgid(candidate.pid)
        except OSError:
            return None
        return self._leader_for(session, candidate) or self._leader_for(group, candidate)

    def _by_ancestry(self, candidate: psutil.Process) -> str | None:
        current = candidate
        for _ in range(MAX_ANCESTRY):
            if current.pid in self.leaders:
                return self._leader_for(current.pid, current)
            parent = self.processes.get(current.info.get("ppid") or 0)
            if parent is None or parent.pid == self.own_pid:
                return None
            if parent.pid in self.memo and parent.pid not in self.leaders:
                return self.memo[parent.pid]
            current = parent
        return None

    def _by_lineage(self, candidate: psutil.Process) -> str | None:
        with _lineage_lock:
            seen = _lineage.get(candidate.pid)
        if seen is None or seen[1] not in self.wanted or seen[0] != candidate.info.get("create_time"):
            return None
        return seen[1]


def find_task_processes(leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
    """Every live process of the given tasks, keyed by task id.

    Args:
        leaders: each task's leader, keyed by its pid (which is also its session and group id).
    """
    found: dict[str, list[psutil.Process]] = {leader.task_id: [] for leader in leaders.values()}
    scanned = {pid: leader for pid, leader in leaders.items() if leader.cgroup is None}
    for leader in leaders.values():
        if leader.cgroup is not None:
            found[leader.task_id] = _cgroup_members(leader.cgroup)
    if not scanned:
        return found
    scan = _Scan(scanned)
    seen: dict[int, tuple[float, str]] = {}
    for candidate in scan.processes.values():
        if candidate.pid == scan.own_pid:
            continue
        task_id = scan.task_of(candidate)
        if task_id is not None and not is_gone(candidate):
            found[task_id].append(candidate)
            seen[candidate.pid] = (candidate.info.get("create_time") or 0.0, task_id)
    with _lineage_lock:
        _lineage.update(seen)
        for pid in [pid for pid in _lineage if pid not in scan.processes]:
            del _lineage[pid]
    return found


def unclaimed_children(leader_pids: Collection[int]) -> list[psutil.Process]:
    """Live children of this process that lead no task: orphans that came to us as subreaper
    from a task that can no longer be told."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return []
    return [child for child in children if child.pid not in leader_pids and not is_gone(child)]


def every_process(leaders: Mapping[int, Leader]) -> list[psutil.Process]:
    return [member for group in find_task_processes(leaders).values() for member in group]


def describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "?"


def pids(processes: Sequence[psutil.Process]) -> set[int]:
    return {process.pid for process in processes}
