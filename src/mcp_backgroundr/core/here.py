"""This machine as a place tasks run: the core's own units over the platform backend.

Each operation is the local half of a core unit (``starting.start_here``,
``reading.read_here`` ...); :class:`Here` only puts them behind the :class:`~.place.Place`
seam, so that the units' fronts never ask where a task runs.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from .. import offload
from ..errors import RegistryFullError
from ..models import TaskRecord
from ..results import Ended, InputWritten, Status, Waited
from ..store import retention
from . import adopting, ending, listing, lookup, reading, sending, shutdown, starting, validation
from .place import ShutdownWork, TakenOver
from .policy import Policy
from .requests import ReadPlan, StartPlan, StartRequest
from .state import CoreState
from .task import Task
from .validation import WaitConditions
from .watch import ProgressReporter


class Here:
    """Tasks on this machine: processes this server spawns, contains, watches and ends."""

    def __init__(self, state: CoreState) -> None:
        self._state = state

    def checked_start(self, request: StartRequest, policy: Policy) -> str:
        return policy.checked_cwd(validation.checked_cwd(request.cwd))

    async def start(self, record: TaskRecord, plan: StartPlan, env: dict[str, str]) -> Task:
        return await starting.start_here(self._state, record, plan, env)

    async def read(self, task: Task, plan: ReadPlan) -> Status:
        return await reading.read_here(self._state, task, plan)

    async def wait(
        self, task: Task, conditions: WaitConditions, since: int | None, progress: ProgressReporter | None
    ) -> Waited:
        return await reading.wait_here(self._state, task, conditions, since, progress)

    async def send_input(self, task: Task, text: str, newline: bool, close: bool) -> InputWritten:
        return await sending.send_here(self._state, task, text, newline, close)

    async def end(self, task: Task, grace: float, reason: str) -> Ended:
        return await ending.end_here(self._state, task, grace)

    async def lingering(self, task: Task) -> bool:
        return bool(await task.lingering())

    async def left_running(self, records: Sequence[TaskRecord]) -> dict[str, int]:
        return await listing.left_here(self._state, records)

    async def remove(self, task: Task, unregister: Callable[[], Awaitable[None]]) -> int:
        # Unlinking a big log frees its blocks (and discards them, on some disks): not on the event loop.
        delete_files = functools.partial(offload.run, offload.LOGS, retention.delete_task_files, task.record)
        # The record goes first: no reader finds a record whose log is gone; but a full disk takes
        # no write until space is freed (as retention.forget).
        try:
            await unregister()
        except RegistryFullError:
            freed = await delete_files()
            await unregister()
            return freed
        return await delete_files()

    def watch_view(self, view: Task) -> None:
        lookup.watch_view_here(self._state, view)

    async def take_over(self, records: Sequence[TaskRecord]) -> TakenOver:
        return await adopting.take_over_here(self._state, records)

    async def refresh(self, tasks: Sequence[Task]) -> list[Task]:
        return []  # a local task of a server that is gone is settled from its record as read

    async def forget(self, records: Sequence[TaskRecord]) -> list[str]:
        return []  # pruning deleted their logs already

    def helper_pids(self) -> set[int]:
        return set()

    async def close(self) -> None:
        pass  # a session's reads and ends here hold nothing past their answer

    def watched_helpers(self) -> set[int] | None:
        return set()

    async def prepare_shutdown(self, tasks: Sequence[Task]) -> ShutdownWork:
        return await shutdown.prepare_here(self._state, tasks)
