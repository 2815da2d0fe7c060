"""Where a task runs: the one seam between the core and the place that runs a task.

A :class:`Place` offers the operations that differ between this machine (``here.py``, over
the platform backend) and other hosts (``remote/place.py``, over SSH; it sits above the core
and is handed to the supervisor, or to a session without a server, ``session.py``): checking
what it can run, starting, reading, waiting, input, ending, removing, and what a server does
with many tasks at once (taking over what a dead server left, learning how left tasks stand,
forgetting pruned ones, shutting down; a session lets go instead). The core chooses a task's
place once, from its host (:meth:`CoreState.place_at`, through ``place_of`` for a record), and
then calls it without asking where the task is. A place reaches back into
the core only through :class:`Core`, the little a place needs of the server it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import anyio

    from ..config import Settings
    from ..models import TaskRecord
    from ..results import Ended, InputWritten, Status, Waited
    from .policy import Policy
    from .requests import ReadPlan, StartPlan, StartRequest
    from .task import Task
    from .validation import WaitConditions
    from .watch import ProgressReporter


class Core(Protocol):
    """What a place may ask of the server it serves."""

    settings: Settings
    policy: Policy
    owner: str
    leaving: anyio.Event
    """Set once the server is leaving: an end under way cuts what is left of its grace to the shutdown's."""

    def in_background(self, task: Task | None, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background; its failure is recorded on ``task`` (or reported)."""

    def learnt(self, task: Task, ended: bool) -> None:
        """Record what a place learnt about a task: its record as now known, and an exit seen just now."""

    async def claim(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Make this server the owner of tasks of servers that are gone; those it won (another
        server that found them at the same moment may have taken the others: leave them)."""

    async def insert(self, record: TaskRecord) -> None:
        """Record a task just started in the registry (raises RegistryError)."""


PlaceFactory = Callable[[Core], "Place"]
"""Makes a place for the server it serves (``remote.RemotePlace`` is one)."""

ShutdownWork = Callable[[], Awaitable[int]]
"""A place's part of a server's shutdown, once every place has prepared: how many tasks had
processes to end."""


@dataclass
class TakenOver:
    """What a place did with the tasks that servers now gone left there."""

    changed: list[TaskRecord] = field(default_factory=list)
    """The records to save."""
    adopted: list[Task] = field(default_factory=list)
    """Running tasks that are this server's from now on (their runtime limits apply)."""


class Place(Protocol):
    """The operations a place offers for the tasks that run there."""

    def checked_start(self, request: StartRequest, policy: Policy) -> str:
        """Refuse what this place cannot run (or the policy does not let go there); answers the
        task's working directory as this place takes it."""

    async def start(self, record: TaskRecord, plan: StartPlan, env: dict[str, str]) -> Task:
        """Start the record's task, record it in the registry and learn its exit from now on;
        ``env`` is its whole environment here (a place whose tasks inherit another environment
        takes ``plan.env`` over it)."""

    async def read(self, task: Task, plan: ReadPlan) -> Status:
        """The task's status with the slice of output (or the grep) ``plan`` asks for."""

    async def wait(
        self, task: Task, conditions: WaitConditions, since: int | None, progress: ProgressReporter | None
    ) -> Waited:
        """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""

    async def send_input(self, task: Task, text: str, newline: bool, close: bool) -> InputWritten:
        """Write ``text`` (and a line end) to the running task's input; optionally close it."""

    async def end(self, task: Task, grace: float, reason: str) -> Ended:
        """End the task's whole tree and answer once it is gone, naming survivors."""

    async def lingering(self, task: Task) -> bool:
        """Whether processes of a finished task are still alive (it cannot be removed then)."""

    async def left_running(self, records: Sequence[TaskRecord]) -> dict[str, int]:
        """How many processes each of these finished tasks (not known to have none left) left
        running, for those that left some, in one look for all of them (per host, one call); this
        server's tasks found with none are settled (not looked for again)."""

    async def remove(self, task: Task, unregister: Callable[[], Awaitable[None]]) -> int:
        """Delete a finished task's files and (``unregister``) its record, in the order this place
        needs; the bytes freed."""

    def watch_view(self, view: Task) -> None:
        """Learn the end of another server's running task that a caller asked about, if this place can."""

    async def take_over(self, records: Sequence[TaskRecord]) -> TakenOver:
        """At start-up, deal with the tasks at this place of servers that are gone: end, settle
        or adopt them (``records``: every record of the registry at this place)."""

    async def refresh(self, tasks: Sequence[Task]) -> list[Task]:
        """Learn how running tasks of servers that are gone stand; those that ended."""

    async def forget(self, records: Sequence[TaskRecord]) -> list[str]:
        """Delete what is left of pruned tasks; a line for each place whose files were left."""

    def helper_pids(self) -> set[int]:
        """This server's own helper processes for this place (never a task's)."""

    async def close(self) -> None:
        """Let go of what this place holds, at the end of a session that shuts nothing down (a
        command for people): what it opened itself (connections), never a task."""

    def watched_helpers(self) -> set[int] | None:
        """The helpers of this place that are this server's children and whose exits their own
        watchers collect (the orphan reaper must leave them); None while one is being started, its
        pid not known yet: no orphan may be reaped then, since it could be that one."""

    async def prepare_shutdown(self, tasks: Sequence[Task]) -> ShutdownWork:
        """At the server's exit, before any place starts ending anything: mark the tasks (this
        server's, at this place) that are not meant to outlive it, and look at what must be seen
        first; answers the work that ends them (and closes what the place holds)."""
