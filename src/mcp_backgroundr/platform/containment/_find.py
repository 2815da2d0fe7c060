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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import psutil

from ...config import TASK_ID_ENV
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


def still_running(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that have not ended (blocking: a look at each in /proc)."""
    return [process for process in processes if not is_gone(process)]


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
        # Forget the processes that are gone. Not merely those this scan did not list: a process
        # started after it began, and claimed meanwhile (Arrivals), is missing from it.
        for pid in [pid for pid in _lineage if pid not in scan.processes and not psutil.pid_exists(pid)]:
            del _lineage[pid]
    return found


def _children() -> list[psutil.Process]:
    try:
        return [child for child in psutil.Process().children() if not is_gone(child)]
    except psutil.Error:
        return []


def unclaimed_children(leader_pids: Collection[int], *, claimed_too: bool = True) -> list[psutil.Process]:
    """Live children of this process that lead no task: orphans that came to us as subreaper
    (with ``claimed_too=False``, only those no task claimed: from a task that cannot be told).
    Blocking: a scan of every process."""
    with _lineage_lock:
        claimed = set() if claimed_too else set(_lineage)
    return [child for child in _children() if child.pid not in leader_pids and child.pid not in claimed]


def _claim(task_id: str, processes: Sequence[psutil.Process]) -> None:
    """Remember ``processes`` as the task's (a later scan finds them by lineage)."""
    with _lineage_lock:
        for member in processes:
            try:
                _lineage[member.pid] = (member.create_time(), task_id)
            except psutil.Error:
                continue


class Arrivals:
    """Orphans handed to the server (the subreaper) when a task's main process exits.

    At the subreaper level a task's main process is a child subreaper too: an orphan inside the
    task stays in its tree (found by ancestry) while that process lives, and comes to the server
    only when it exits, at a moment the server sees. When exactly one task's main process had
    exited since the last look, every newcomer is that task's and is ended with it; when several
    had, they cannot be told apart and stay the server's own (ended when it exits).
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._accounted: set[int] = set()

    def claim(
        self, leaders: Mapping[int, str], exited: Callable[[int], bool], others: Collection[int]
    ) -> tuple[str | None, list[int]]:
        """Look at this process's children after a leader exited; return the task the newcomers
        were claimed for (None when it cannot be told) and their pids. ``leaders``: task id of
        each task's main process (ours), ``others``: children that are no task's. Blocking (a scan
        of every process); one look at a time."""
        before = {pid for pid in leaders if pid not in self._accounted and exited(pid)}
        children = _children()
        # A leader that exited during the scan may or may not have handed its orphans over yet.
        after = {pid for pid in leaders if pid not in self._accounted and exited(pid)}
        newcomers = [c for c in children if c.pid not in self._seen and c.pid not in leaders and c.pid not in others]
        self._seen = {child.pid for child in children}
        self._accounted = (self._accounted | before) & set(leaders)
        owner = leaders[next(iter(after))] if len(after) == 1 and before == after else None
        if owner is not None:
            _claim(owner, newcomers)
        return owner, [child.pid for child in newcomers]


def every_process(leaders: Mapping[int, Leader]) -> list[psutil.Process]:
    return [member for group in find_task_processes(leaders).values() for member in group]


def describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "?"


def pids(processes: Sequence[psutil.Process]) -> set[int]:
    return {process.pid for process in processes}
