"""What the core's units share: this server's tasks, and the means every unit acts through.

The core is split by job — starting (``starting``), recording exits (``recording``),
watching (``watching``), runtime limits (``deadlines``), finding a task by id
(``lookup``), reading and waiting (``reading``), listing, input (``sending``), ending
(``ending``), shutdown, forgetting (``forgetting``) and taking over what a dead server
left (``adopting``). Each is a module of functions taking one :class:`CoreState`;
:class:`~.supervisor.Supervisor` puts them together.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import offload
from ..config import Settings
from ..errors import RegistryError, warn
from ..logs import matching
from ..logs.capping import CapperProcess
from ..models import TaskRecord
from ..platform import scans
from ..platform.containment import Arrivals, Containment, Level
from ..platform.inotify import WriteWatches
from ..store.registry import Registry, claim
from . import watchers
from .place import Place
from .policy import Policy
from .task import Task


class TaskChange(enum.StrEnum):
    STARTED = "started"
    ENDED = "ended"
    REMOVED = "removed"


ChangeHook = Callable[[TaskChange, str], Coroutine[Any, Any, None]]
"""Called with what changed and the task id."""


class CoreState:
    """This server's tasks by id, the views of other servers' tasks it was asked about, and the
    services of the running server (its task group, log capper, write watches, sockets)."""

    def __init__(
        self, settings: Settings, registry: Registry, policy: Policy, owner: str, on_change: ChangeHook | None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.policy = policy
        self.owner = owner
        self.on_change = on_change
        """Told (in the background) when a task starts, ends or is removed."""
        self.own: dict[str, Task] = {}
        """The tasks this server owns, oldest first."""
        self.views: dict[str, Task] = {}
        """Views of other servers' tasks that a caller asked about."""
        self.sockets = scans.Sockets(lambda work: self.in_background(None, "reading the socket table", work))
        self.containment = Containment(Level.MARKER)
        """Chosen when the server starts: how new tasks are contained."""
        self.here: Place
        """The place that runs tasks on this machine (set by the supervisor)."""
        self.away: Place
        """The place that runs tasks on other hosts (set by the supervisor)."""
        self.group: TaskGroup | None = None
        """Where background work runs, once the server has started."""
        self.capper: CapperProcess | None = None
        self.writes: WriteWatches | None = None
        self.shutting_down = False
        self.leaving = anyio.Event()
        """Set once the server is leaving (its client has gone, or a signal asked it to exit): an end
        under way then shortens what is left of its grace period to the shutdown's."""
        self.spawns_in_flight = 0
        """Children being spawned in worker threads, not yet known as tasks."""
        self.starts_in_flight = 0
        """Starts past the max_tasks check whose task is not among ``own`` yet: they count as running."""
        self.removing: set[str] = set()
        """Tasks a remove_task is removing: a second one at once is told so, not answered "removed"."""
        self.arrivals = Arrivals()
        """Orphans handed to the server (as subreaper) by tasks whose main process exited."""
        self.arrivals_lock = anyio.Lock()
        """One look at the orphans a task's exit handed over at a time."""
        self.pruned_at = 0.0

    @property
    def writes_watched(self) -> WriteWatches:
        assert self.writes is not None, "the server has not started"
        return self.writes

    def in_background(self, task: Task | None, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` for ``task`` in the background; its failure is recorded on the task
        (``end_reason``, a line on stderr) and never ends the server."""
        assert self.group is not None
        label = "server" if task is None else f"task {task.record.task_id}"
        record = None if task is None else functools.partial(self.note, task)
        self.group.start_soon(watchers.contained, label, what, work, record)

    def note(self, task: Task, note: str) -> None:
        """Add ``note`` to the task's end_reason (recorded, when the task is ours)."""
        add_note(task.record, note)
        if self.own.get(task.record.task_id) is task and not self.shutting_down:
            self.save([task.record])

    def save(self, records: list[TaskRecord]) -> None:
        """Record task changes; a registry failure is reported but never stops the server."""
        if not records:
            return
        try:
            self.registry.update_soon(records)  # the event loop never waits on the registry's lock
        except RegistryError as exc:
            warn(str(exc))

    def changed(self, change: TaskChange, task_id: str) -> None:
        if self.on_change is not None and self.group is not None and not self.shutting_down:
            self.in_background(None, "telling clients", functools.partial(self.on_change, change, task_id))

    def forget(self, record: TaskRecord) -> None:
        self.own.pop(record.task_id, None)
        self.views.pop(record.task_id, None)
        if self.capper is not None:
            self.capper.forget(Path(record.log_path))

    def cap(self, record: TaskRecord) -> None:
        """Keep a task's log under its cap from now on (or record why it cannot be); a running
        supervised task's runner does that itself, with or without a server, until it ends (what
        the command's processes still write then is capped here)."""
        if self.capper is not None and record.max_log_bytes and not (record.supervised and record.running):
            note = self.capper.gave_up  # said here: the task is not among this server's yet
            try:
                if note is None:
                    self.capper.watch(Path(record.log_path), record.max_log_bytes)
            except OSError as exc:  # e.g. out of inotify watches
                note = f"its log is not capped ({watchers.failure_text(exc)})"
            if note is not None:
                watchers.report(f"task {record.task_id}", note)
                add_note(record, note)

    def cap_held_by(self, record: TaskRecord) -> None:
        """The task whose log is capped has started: should this server die, its log stays capped
        while it runs (see ``logs.capping``)."""
        if self.capper is not None and record.pid is not None:
            self.capper.held_by(Path(record.log_path), record.pid, record.pid_create_time)

    def end_recorded(self, record: TaskRecord) -> None:
        """The end of a task whose log is capped is recorded: should this server die, the capping
        process has no end of it to write down for the next server (see ``logs.capping``)."""
        if self.capper is not None:
            self.capper.end_recorded(Path(record.log_path))

    def cap_failed(self, path: Path, note: str) -> None:
        """The capper could not keep this log under its cap: record it on its task."""
        for task in self.own.values():
            if task.record.log_path == str(path):
                watchers.report(f"task {task.record.task_id}", note)
                self.note(task, note)

    def place_of(self, record: TaskRecord) -> Place:
        """Where the task runs."""
        return self.place_at(record.host)

    def place_at(self, host: str | None) -> Place:
        """The place for ``host`` (None: this machine): the one place the core asks where a task is."""
        return self.here if host is None else self.away

    @property
    def places(self) -> tuple[Place, ...]:
        return (self.here, self.away)

    def own_at(self, place: Place) -> list[Task]:
        """This server's tasks at ``place``, oldest first."""
        return [task for task in self.own.values() if self.place_of(task.record) is place]

    def helper_pids(self) -> set[int]:
        """This server's helper processes (never a task's): the capping process, the matching
        processes, and those of every place."""
        capping = (self.capper.watched_helpers() or set()) if self.capper is not None else set()
        return capping.union(matching.MATCHERS.pids() or set(), *(place.helper_pids() for place in self.places))

    def watched_helpers(self) -> set[int] | None:
        """This server's helper children whose exits their own watchers collect (the capping
        process, the matching processes, and those of every place); None while one is being
        started (see :meth:`Place.watched_helpers`)."""
        found: set[int] = set()
        watchers = [self.capper.watched_helpers] if self.capper is not None else []
        watchers.append(matching.MATCHERS.pids)
        for pids in (watched() for watched in [*watchers, *(place.watched_helpers for place in self.places)]):
            if pids is None:
                return None
            found |= pids
        return found

    def learnt(self, task: Task, ended: bool) -> None:
        """Record what a place learnt about a task: its record as now known, and an exit seen just now."""
        if task.record.task_id in self.own:
            self.save([task.record])
            if ended:
                self.changed(TaskChange.ENDED, task.record.task_id)

    async def claim(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Make this server the owner of tasks of servers that are gone, in one transaction, as far
        as no other server took them first; those won. When the registry cannot be written (a full
        disk), all of them: tasks nobody watches are worse than a task watched twice."""
        if not records:
            return []
        try:
            return await offload.run(offload.REGISTRY, claim, self.registry, records, self.owner)
        except RegistryError as exc:
            warn(f"{exc}; taking over {len(records)} task(s) without a claim")
            return records

    async def insert(self, record: TaskRecord) -> None:
        """Record a task just started in the registry, in a worker thread (raises RegistryError)."""
        await offload.run(offload.REGISTRY, self.registry.insert, record)

    def local_leader_pids(self) -> set[int]:
        """The main processes of this server's tasks on this machine."""
        return {t.record.pid for t in self.own_at(self.here) if t.record.pid is not None}


def add_note(record: TaskRecord, note: str) -> None:
    record.end_reason = note if record.end_reason is None else f"{record.end_reason}; {note}"
