"""Containment: which processes belong to a task, and how all of them are ended.

Three levels, strongest first; the server takes the strongest the machine offers when
it starts (``MCP_BACKGROUNDR_CONTAINMENT=cgroup|subreaper|marker`` caps it, default
``auto``), and every task records the level it started under:

``cgroup``
    A cgroup v2 per task, joined by the child before it execs: the task's processes are
    exactly the cgroup's members, and none can leave. Ending freezes the cgroup, then
    ``cgroup.kill``; memory and process limits are the kernel's (``memory.max`` /
    ``pids.max``, or the v1 hierarchies where v2 lacks the controllers). Needs a writable
    cgroup2 mount (root), or a delegated directory (``MCP_BACKGROUNDR_CGROUP``, e.g. the
    server started by ``systemd-run --user --scope -p Delegate=yes``).
``subreaper``
    The server, and each task's main process (or a ``keep_running`` task's runner), is a
    child subreaper: an orphaned descendant goes to the task's main process while it lives
    (found by ancestry), and with its orphans to the server when it exits — claimed for that
    task when it alone had exited (:class:`Arrivals`), else the server's own, ended when
    the server exits. A process that left the session and dropped the marker is found.
``marker``
    The task's session and process group, and the ``MCP_BACKGROUNDR_TASK_ID`` marker in
    the environment: a process that leaves both is not found.

    Containment
    ├── place()     a new task's cgroup (or none) and the step that joins it
    ├── leader()    what finds an existing task's processes
    └── reap()      collect orphans that exited (subreaper)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ...config import CGROUP_ENV, CONTAINMENT_ENV
from ...errors import InvalidArgumentError, SpawnFailedError
from . import _kernel
from ._cgroup import Limits, LimitsHit, TaskCgroup, writable_base
from ._end import EndOutcome, Hurry, end_trees, wait_until_gone
from ._find import Arrivals, Leader, describe, find_task_processes, is_gone, still_running, unclaimed_children

__all__ = [
    "Arrivals",
    "Containment",
    "EndOutcome",
    "Hurry",
    "Leader",
    "Level",
    "Limits",
    "LimitsHit",
    "Placement",
    "TaskCgroup",
    "describe",
    "end_trees",
    "find_task_processes",
    "has_exited",
    "is_gone",
    "still_running",
    "unclaimed_children",
    "wait_until_gone",
]


class Level(enum.StrEnum):
    """How a task's processes are found, strongest first."""

    CGROUP = "cgroup"
    SUBREAPER = "subreaper"
    MARKER = "marker"


LEVEL_CHOICES = ("auto", *Level)


@dataclass(frozen=True)
class Placement:
    """Where a new task goes: its cgroup (if any) and what its child runs before exec to get there."""

    level: Level
    cgroup: TaskCgroup | None = None

    @property
    def join(self) -> Callable[[], None] | None:
        """What the child runs before exec: join its cgroup; at the subreaper level, become a
        subreaper itself, so orphans inside the task stay in its tree (see :class:`Arrivals`)."""
        if self.cgroup is not None:
            return self.cgroup.joiner()
        return _become_subreaper if self.level is Level.SUBREAPER else None

    def discard(self) -> None:
        """Remove the cgroup of a task that could not start."""
        if self.cgroup is not None:
            self.cgroup.remove()


class Containment:
    """The level this server contains its new tasks at, and what that level needs."""

    def __init__(self, level: Level, base: Path | None = None) -> None:
        self.level = level
        self.base = base
        """Where task cgroups are made (cgroup level only)."""

    @classmethod
    def choose(cls, wanted: str, delegated: str | None) -> Containment:
        """The strongest level available, at most ``wanted``; task cgroups in ``delegated`` if given."""
        wanted = wanted.strip().lower()
        if wanted not in LEVEL_CHOICES:
            raise InvalidArgumentError(CONTAINMENT_ENV, wanted, f"use one of {', '.join(LEVEL_CHOICES)}")
        if wanted in ("auto", Level.CGROUP):
            base = writable_base(delegated)
            if base is not None:
                _kernel.become_subreaper()  # for tasks adopted from servers that had no cgroups
                return cls(Level.CGROUP, base)
            if delegated:  # named on purpose: falling back in silence would drop the limits it was for
                raise InvalidArgumentError(
                    CGROUP_ENV,
                    delegated,
                    "it is not a cgroup v2 directory this server may write (its cgroup.procs); give one "
                    "delegated to this user, or unset it",
                )
            if wanted == Level.CGROUP:
                raise InvalidArgumentError(
                    CONTAINMENT_ENV,
                    wanted,
                    "no writable cgroup2 hierarchy here: run as root, start the server under "
                    f"'systemd-run --user --scope -p Delegate=yes', or set {CGROUP_ENV} to a delegated directory",
                )
        if wanted != Level.MARKER and _kernel.become_subreaper():
            return cls(Level.SUBREAPER)
        return cls(Level.MARKER)

    def place(self, task_id: str, limits: Limits) -> Placement:
        """Make a new task's cgroup (cgroup level), applying ``limits``; refuse limits elsewhere."""
        if self.base is None:
            if limits:
                field = "max_memory_bytes" if limits.memory_bytes is not None else "max_processes"
                value = limits.memory_bytes if limits.memory_bytes is not None else limits.processes
                raise InvalidArgumentError(
                    field,
                    value,
                    f"limits need a cgroup per task, and this server contains tasks at the {self.level} level "
                    "(see the README: containment); drop the limit",
                )
            return Placement(self.level)
        try:
            return Placement(self.level, TaskCgroup.create(self.base, f"task-{task_id}", limits))
        except OSError as exc:
            raise SpawnFailedError(
                f"could not create the task's cgroup under {self.base}: {exc.strerror or exc}; "
                f"set {CONTAINMENT_ENV}=subreaper to run tasks without cgroups"
            ) from exc

    @staticmethod
    def reap(own_children: Collection[int]) -> int:
        """Collect exited orphans (never one of ``own_children``, whose watchers reap them)."""
        return _kernel.reap_orphans(own_children)


def _become_subreaper() -> None:
    _kernel.become_subreaper()


def has_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited, without reaping it."""
    return _kernel.has_exited(pid)


def die_with_server() -> bool:
    """Linux: be killed when the server dies, even by SIGKILL (a helper process of the server's that
    must not outlive it); elsewhere False."""
    return _kernel.die_with_parent()


def protect_server() -> bool:
    """Keep tasks (same user) out of the server's environment and memory: non-dumpable."""
    return _kernel.forbid_inspection()
