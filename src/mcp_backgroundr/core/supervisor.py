"""The core's front for a server: one object the tools and HTTP call for every task operation
(the CLI calls the same units through ``session.py``, without a server).

The supervisor starts what a server needs (containment, the log capper, the write watches,
the task group) inside an ``AsyncExitStack``, takes over what a dead server left, and ends
every task it owns at shutdown. Each operation is one job of the core, in a module of its own
under ``core/``: ``starting``, ``watching`` and ``recording`` (exits), ``deadlines``,
``lookup``, ``reading`` (status, grep, wait), ``listing``, ``sending`` (input), ``ending``,
``shutdown``, ``forgetting`` (remove, prune) and ``adopting``; they share one
:class:`~.core.state.CoreState`.
"""

from __future__ import annotations

import contextlib
import functools
from types import TracebackType

import anyio

from .. import offload
from ..config import Settings
from ..errors import RegistryError
from ..logs import matching
from ..logs.capping import CapperProcess
from ..models import TaskRecord, TaskState
from ..platform import backend, process
from ..platform.containment import Level
from ..platform.inotify import WriteWatches
from ..results import Ended, InputWritten, Listing, Removed, Started, Status, Waited
from ..store import orphans
from ..store.registry import Registry
from . import (
    adopting,
    ending,
    forgetting,
    listing,
    lookup,
    reading,
    registry_guard,
    sending,
    shutdown,
    starting,
    startup,
    watch,
    watching,
)
from .here import Here
from .place import PlaceFactory
from .policy import Policy
from .requests import (
    ReadRequest,
    StartPlan,
    StartRequest,
    WaitRequest,
    check_grace,
    check_read,
    check_start,
    check_wait,
)
from .state import ChangeHook, CoreState, TaskChange
from .validation import WaitConditions

__all__ = ["ChangeHook", "ReadRequest", "StartRequest", "Supervisor", "TaskChange", "WaitRequest", "Waited"]


class Supervisor:
    """Starts and ends the tasks of one server process, and answers about any task."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        away: PlaceFactory,
        owner: str | None = None,
        policy: Policy | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        """``away`` makes the place that runs tasks that have a ``host`` (``remote.RemotePlace``);
        ``on_change`` is told (in the background) when a task starts, ends or is removed."""
        self.settings = settings
        self._state = CoreState(settings, registry, policy or Policy(), owner or orphans.owner_id(), on_change)
        self._state.here = Here(self._state)
        self._state.away = away(self._state)
        self._shutdown_done: anyio.Event | None = None
        self._exit_stack = contextlib.AsyncExitStack()
        """What __aexit__ undoes: shutdown, then the task group."""

    async def __aenter__(self) -> Supervisor:
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._start(stack)
                self._exit_stack = stack.pop_all()
        except BaseExceptionGroup as group:
            raise startup.the_failure(group) from None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._exit_stack.__aexit__(exc_type, exc, tb)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Everything a server needs before it answers; on a failure, ``stack`` undoes what was done."""
        state = self._state
        process.raise_open_file_limit()
        state.containment = backend.current().choose_containment(self.settings.containment, self.settings.cgroup_dir)
        offload.favour_the_event_loop()
        capper = state.capper = CapperProcess(on_failure=state.cap_failed, errors=self.settings.helpers_log)
        matching.MATCHERS.write_errors_to(self.settings.helpers_log)
        with startup.step("create the inotify instance that waits use"):
            writes = state.writes = WriteWatches()
        state.group = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(self._stop)
        state.in_background(None, "capping logs", capper.run)
        state.in_background(None, "watching logs for waits", writes.run)
        if state.containment.level is not Level.MARKER:
            state.in_background(None, "reaping orphans", functools.partial(watching.reap_orphans, state))
        keeping = functools.partial(registry_guard.keep_registry, state.registry, writes)
        state.in_background(None, "watching the registry file", keeping)
        # Logs that grew while no server ran are capped first: on a disk they filled, that frees
        # the space the registry's writes need (ending orphans, pruning); again once the orphans
        # are ended (they wrote on meanwhile).
        records = await offload.run(offload.REGISTRY, state.registry.records)
        await adopting.cap_grown_logs(records)
        await adopting.take_over_left_behind(state, records)
        await forgetting.prune_now(state)
        await adopting.cap_grown_logs(records)

    async def _stop(self) -> None:
        await self.shutdown()
        assert self._state.group is not None
        self._state.group.cancel_scope.cancel()

    # -- start -----------------------------------------------------------------

    def check_start(self, request: StartRequest) -> StartPlan:
        """``request`` checked against the settings and the policy, before anything is started."""
        return check_start(request, self.settings, self._state.policy, self._state.place_at(request.host))

    async def start(self, plan: StartPlan) -> Started:
        """Start a checked task and answer at once (see ``core/starting.py``)."""
        return await starting.start(self._state, plan)

    # -- read and wait ---------------------------------------------------------

    async def command(self, task_id: str) -> str:
        """A task's whole command (answers show at most the start of it)."""
        return (await lookup.find_task(self._state, task_id)).record.command

    async def read(self, task_id: str, request: ReadRequest | None = None) -> Status:
        """Lifecycle and a bounded slice of output of one task (``request``: which slice)."""
        return await reading.read(self._state, task_id, check_read(request or ReadRequest(), self.settings))

    def check_wait(self, request: WaitRequest) -> WaitConditions:
        """Validate wait conditions before anything is waited on."""
        return check_wait(request, self.settings)

    async def wait(
        self,
        task_id: str,
        conditions: WaitConditions,
        since: int | None = None,
        progress: watch.ProgressReporter | None = None,
    ) -> Waited:
        """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""
        return await reading.wait(self._state, task_id, conditions, since, progress)

    def own_records(self) -> list[TaskRecord]:
        """The records of this server's tasks, oldest first (cheap: nothing is read)."""
        return listing.own_records(self._state)

    async def list_tasks(
        self, state: TaskState | None = None, everyone: bool = False, limit: int | None = None
    ) -> Listing:
        """This server's tasks (or, with ``everyone``, every task in the registry), newest first.
        With ``everyone``, this machine's tasks of servers that died beside this one are taken over
        first, as a starting server would (a session for the CLI's ``ps`` takes nothing over)."""
        if not everyone:
            return await listing.list_tasks(self._state, state, everyone, limit)
        records = await listing.every_record(self._state)
        await adopting.take_over_gone_here(self._state, records)  # changes what it takes over in ``records``
        return await listing.list_tasks(self._state, state, everyone, limit, records)

    # -- act -------------------------------------------------------------------

    async def send_input(self, task_id: str, text: str, newline: bool = True, close: bool = False) -> InputWritten:
        """Write text to a task's stdin (or terminal); optionally close it afterwards."""
        return await sending.send_input(self._state, task_id, text, newline, close)

    async def remove(self, task_id: str) -> Removed:
        """Forget a finished task and delete its log: one of ours, or one whose server is gone."""
        return await forgetting.remove(self._state, task_id)

    async def end(
        self,
        task_id: str,
        grace_seconds: float | None = None,
        within: float | None = None,
        progress: watch.ProgressReporter | None = None,
    ) -> Ended:
        """End a task's whole process tree and answer once it is gone, or after ``within`` seconds
        while it is still ending (see :func:`ending.end_within`); ``progress`` hears meanwhile."""
        grace = check_grace(grace_seconds, self.settings)
        return await ending.end_within(self._state, task_id, grace, within, progress)

    async def shutdown(self) -> int:
        """End every task this server owns, all at once, within a bounded time.

        Returns how many tasks still had processes to end.
        """
        with anyio.CancelScope(shield=True):
            if self._shutdown_done is not None:  # under way: answer once it is done
                await self._shutdown_done.wait()
                return 0
            self._shutdown_done = anyio.Event()
            self.client_left()
            try:
                with contextlib.suppress(RegistryError):  # what it cannot read, the next server ends
                    await adopting.take_over_gone_here(self._state)
                self._state.shutting_down = True
                ended = await shutdown.end_all(self._state)
                if self._state.capper is not None:  # the server may exit at once: nothing of it may outlive it
                    await self._state.capper.stop()
                await matching.stop()
            finally:
                self._shutdown_done.set()
        return ended

    def client_left(self) -> None:
        """The server's client has gone (or the server is told to exit): ends under way shorten their
        grace to the shutdown's, so that the server's exit does not wait out a long one; the capping
        process is not started again should it end."""
        self._state.leaving.set()
        if self._state.capper is not None:
            self._state.capper.leaving()

    @property
    def shutting_down(self) -> bool:
        return self._state.shutting_down
