"""Other hosts as a place tasks run: :class:`~.tasks.RemoteTasks` behind the core's place seam.

The core defines :class:`~..core.place.Place`; this is its implementation for SSH hosts, handed
to the supervisor by whoever serves. Each call is one request to the host's agent over a
multiplexed SSH connection; what it learns about a task (its state, an exit) is recorded
through the :class:`~..core.place.Core` it serves, and one watch per host (``watches.py``)
learns exits as they happen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio

from .. import offload
from ..config import TASK_ID_ENV
from ..core.ending import END_REASON
from ..core.place import Core, ShutdownWork, TakenOver
from ..core.policy import Policy
from ..core.requests import ReadPlan, StartPlan, StartRequest
from ..core.shutdown import SHUTDOWN_REASON
from ..core.task import Task
from ..core.validation import WaitConditions
from ..core.watch import ProgressReporter
from ..errors import InvalidArgumentError, RegistryError
from ..models import TaskRecord
from ..platform.containment import Hurry
from ..results import Ended, InputWritten, Status, Waited
from ..store import orphans
from .ssh import parse_destination
from .tasks import RemoteTasks
from .watches import ExitWatches

SHUTDOWN_MARGIN_SECONDS = 0.6
"""At shutdown, how long remote hosts get (beyond the grace) to end the tasks there."""


class RemotePlace:
    """Tasks on SSH hosts: started, read, waited on, fed and ended by their hosts' agents."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.tasks = RemoteTasks(core.settings)
        self._exits = ExitWatches(
            self.tasks, lambda what, work: core.in_background(None, what, work), lambda task: core.learnt(task, True)
        )

    def checked_start(self, request: StartRequest, policy: Policy) -> str:
        assert request.host is not None
        parse_destination(request.host)  # bad input (an empty host) is said as such, not as a policy's refusal
        policy.check_host(request.host)
        if request.pty:
            raise InvalidArgumentError("pty", True, "a remote task cannot have a terminal yet; use stdin=true")
        for name in ("max_memory_bytes", "max_processes"):
            if (value := getattr(request, name)) is not None:
                raise InvalidArgumentError(name, value, "remote tasks have no cgroup limits yet")
        return request.cwd or ""  # as given: the host resolves it ("": its home)

    async def start(self, record: TaskRecord, plan: StartPlan, env: dict[str, str]) -> Task:
        # The task inherits its host's environment: only what the request set goes over.
        wanted = {**plan.env, TASK_ID_ENV: record.task_id}
        await self.tasks.start(record, wanted, plan.stdin, self._core.policy.allowed_cwd_as_written)
        task = Task(record, None)
        try:
            await self._core.insert(record)
        except RegistryError:
            await self.tasks.end(task, 0, END_REASON)  # unrecorded, it could never be found again
            raise
        self._exits.track(task)
        return task

    async def read(self, task: Task, plan: ReadPlan) -> Status:
        if plan.grep is not None:
            status, ended = await self.tasks.grep(task, plan)
        else:
            status, ended = await self.tasks.status(task, plan.lines, plan.since, plan.raw)
        self._core.learnt(task, ended)
        return status

    async def wait(
        self, task: Task, conditions: WaitConditions, since: int | None, progress: ProgressReporter | None
    ) -> Waited:
        waited, ended = await self.tasks.wait(task, conditions, since, progress)
        self._core.learnt(task, ended)
        return waited

    async def send_input(self, task: Task, text: str, newline: bool, close: bool) -> InputWritten:
        return await self.tasks.send_input(task, text + ("\n" if newline else ""), close)

    async def end(self, task: Task, grace: float, reason: str) -> Ended:
        # The server leaving (its client gone) ends the task as its shutdown would, as here (core/ending.py).
        hurry = Hurry(self._core.leaving, self._core.settings.shutdown_grace_seconds)
        answer, ended = await self.tasks.end(task, grace, reason, hurry)
        self._core.learnt(task, ended)
        return answer

    async def lingering(self, task: Task) -> bool:
        return bool(await self.tasks.lingering(task))  # its host looks (this machine's scan cannot)

    async def left_running(self, records: Sequence[TaskRecord]) -> dict[str, int]:
        counts = await self.tasks.left_running(records)
        for record in records:
            if counts.get(record.task_id) == 0:  # this server's: not asked about again
                record.leftovers_ended = True
                self._core.learnt(Task(record, None), False)
        return {task_id: count for task_id, count in counts.items() if count}

    async def remove(self, task: Task, unregister: Callable[[], Awaitable[None]]) -> int:
        # The host first: while it cannot be reached, the record stays, to be removed later.
        freed = await self.tasks.remove(task)
        await unregister()
        return freed

    def watch_view(self, view: Task) -> None:
        pass  # another server's remote task: each read asks its host

    async def take_over(self, records: Sequence[TaskRecord]) -> TakenOver:
        # The connection is not the task: whatever kind, it ran on; its host says how it stands.
        running = [r for r in records if r.running]
        gone = await offload.run(offload.SCANS, orphans.gone_owners, {r.owner for r in running})
        left = await self._core.claim([r for r in running if r.owner in gone])  # another may have won some
        adopted = []
        for record in left:
            record.owner = self._core.owner
            task = Task(record, None)
            self._exits.track(task)
            adopted.append(task)
        return TakenOver(changed=left, adopted=adopted)

    async def refresh(self, tasks: Sequence[Task]) -> list[Task]:
        return await self.tasks.refresh(tasks)

    async def forget(self, records: Sequence[TaskRecord]) -> list[str]:
        return await self.tasks.forget(records)

    def helper_pids(self) -> set[int]:
        return self.tasks.connections.helper_pids()

    async def close(self) -> None:
        # A server may share the connections (their control sockets are in the state directory).
        await self.tasks.close(only_started=True)

    def watched_helpers(self) -> set[int] | None:
        return self.tasks.connections.watched_children()

    async def prepare_shutdown(self, tasks: Sequence[Task]) -> ShutdownWork:
        doomed = [t for t in tasks if t.running and not t.record.keep_running]
        for task in doomed:
            task.record.request_end(SHUTDOWN_REASON)

        async def end_away() -> int:
            """End them as far as their hosts answer in time, then close the SSH connections."""
            grace = self._core.settings.shutdown_grace_seconds
            with anyio.move_on_after(grace + SHUTDOWN_MARGIN_SECONDS):
                await self.tasks.end_all(doomed, grace, SHUTDOWN_REASON)
            await self.tasks.close()
            return len(doomed)

        return end_away
