"""A session of the core without a server: what the commands for people (``cli/``) act through.

A :class:`CoreSession` holds the :class:`~.state.CoreState` every unit of the core takes, with
this machine's place and the place for other hosts (handed in, as to the supervisor), and what
a read, a wait or an end needs in the background: a task group and the write watches. Unlike a
supervisor it starts nothing, takes nothing over, prunes nothing by itself and owns no task:
its owner id is the command's own process, so every task it reaches is a view of another
server's task (or of one whose server is gone). So ``ps`` lists what ``list_tasks(all=true)``
lists, ``status`` and ``logs`` read what ``get_task_status`` reads, ``send`` writes as
``send_task_input`` writes and ``stop`` ends as ``end_background_task`` ends: they call the same
functions.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import anyio

from ..config import Settings
from ..models import TaskRecord, TaskState
from ..platform.inotify import WriteWatches
from ..results import Ended, InputWritten, Listing, Status, Waited
from ..store import orphans
from ..store.registry import Registry
from . import ending, forgetting, listing, reading, sending, startup
from .here import Here
from .place import PlaceFactory
from .policy import Policy
from .requests import ReadRequest, WaitRequest, check_grace, check_read, check_wait
from .state import CoreState


class CoreSession:
    """The core's operations on every task in the registry, for one command, without a server."""

    def __init__(self, settings: Settings, registry: Registry, *, away: PlaceFactory) -> None:
        """``away`` makes the place that reaches tasks that have a ``host`` (``remote.RemotePlace``)."""
        state = self._state = CoreState(settings, registry, Policy(), orphans.owner_id(), None)
        state.here = Here(state)
        state.away = away(state)
        self._exit_stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> CoreSession:
        state = self._state
        async with contextlib.AsyncExitStack() as stack:
            with startup.step("create the inotify instance that waits use"):
                writes = state.writes = WriteWatches()
            state.group = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._close)
            state.in_background(None, "watching logs for waits", writes.run)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._exit_stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:  # what the command failed with, not the task group's wrapping
            raise startup.the_failure(group) from None

    async def _close(self) -> None:
        """Let go of what the places hold (never a task), then stop the background work."""
        with anyio.CancelScope(shield=True):
            for place in self._state.places:
                await place.close()
        assert self._state.group is not None
        self._state.group.cancel_scope.cancel()

    async def list_tasks(self, wanted: TaskState | None) -> Listing:
        """Every task in the registry in state ``wanted`` (None: any), newest first."""
        return await listing.list_tasks(self._state, wanted, everyone=True, limit=None)

    async def read(self, task_id: str, request: ReadRequest) -> Status:
        """A task's status with the slice of output ``request`` asks for."""
        return await reading.read(self._state, task_id, check_read(request, self._state.settings))

    async def wait(self, task_id: str, request: WaitRequest, since: int | None) -> Waited:
        """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""
        return await reading.wait(self._state, task_id, check_wait(request, self._state.settings), since)

    async def send_input(self, task_id: str, text: str, newline: bool, close: bool) -> InputWritten:
        """Write ``text`` (and a line end) to a running task's input; optionally close it."""
        return await sending.send_input(self._state, task_id, text, newline, close)

    async def end(self, task_id: str, grace_seconds: float, reason: str) -> Ended:
        """End a task's whole process tree, whichever server owns it, and record ``reason``."""
        return await ending.end(self._state, task_id, check_grace(grace_seconds, self._state.settings), reason)

    async def prune(self, keep: int, days: float) -> list[TaskRecord]:
        """Forget finished tasks beyond the newest ``keep`` and older than ``days``, with their logs here."""
        return await forgetting.prune(self._state, keep, days)

    async def forget(self, records: list[TaskRecord]) -> list[str]:
        """Delete what is left of pruned tasks at every place; a line for each place whose files were left."""
        return await forgetting.forget_at_places(self._state, records)
