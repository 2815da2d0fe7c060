"""Ending one task's whole process tree, and saying what was checked afterwards."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable

import anyio

from .. import offload
from ..errors import RegistryError
from ..models import TaskState
from ..platform.containment import Hurry, Level, end_trees, unclaimed_children
from ..results import Ended, Survivor
from ..store import orphans
from .lookup import find_task, is_own, owner_gone
from .state import CoreState
from .task import Task, answer_of
from .watch import ProgressReporter, report_progress

END_REASON = "end_background_task"
VERIFIED = {
    Level.CGROUP: "the task's cgroup is empty",
    Level.SUBREAPER: "no process in its session, descended from it (orphans come back to this server) or "
    "carrying its marker is left",
    Level.MARKER: "no process in its session or carrying the task's marker is left (a process that left both "
    "cannot be seen at this containment level)",
}
"""What an end with no survivor has checked, at each containment level."""


async def end(state: CoreState, task_id: str, grace: float, reason: str = END_REASON) -> Ended:
    """End a task's whole process tree, giving it ``grace`` seconds from SIGTERM to SIGKILL, and
    answer once it is gone; ``reason`` is recorded. An end that fails records nothing; the end of
    a task no server owns any more is recorded here (no server will), and so is, for another live
    server's task, that what it left running is ended (its server records the rest)."""
    task = await find_task(state, task_id)
    with anyio.CancelScope(shield=True):
        noted = task.record.end_reason
        asked = task.record.request_end(reason)
        try:
            if asked:
                await _record_request(state, task)
            ended = await state.place_of(task.record).end(task, grace, reason)
        except BaseException:
            if asked and task.running:  # e.g. its host could not be reached: it was never asked
                task.record.kill_requested, task.record.end_reason = False, noted
                with contextlib.suppress(RegistryError):
                    await _record_request(state, task)
            raise
        if is_own(state, task.record.task_id) or await _unowned(state, task):
            state.save([task.record])
        elif task.record.leftovers_ended:  # only this column changed since it was read: only it is written
            with contextlib.suppress(RegistryError):  # unwritten, the next server looks for them again
                await offload.run(offload.REGISTRY, state.registry.update, [task.record])
    return ended


async def end_within(
    state: CoreState, task_id: str, grace: float, within: float | None, progress: ProgressReporter | None = None
) -> Ended:
    """End a task as :func:`end` does, answering within ``within`` seconds (None: once it is gone,
    telling ``progress`` meanwhile): past it the end goes on in the background, and the answer
    shows the task as it is then, with advice on how to learn the outcome."""
    task = await find_task(state, task_id)  # an unknown task is refused at once
    ending = _InBackground(functools.partial(end, state, task_id, grace))
    state.in_background(task, f"ending the task ({END_REASON})", ending.run)
    if (done := await ending.outcome(within, progress, grace)) is not None:
        return done
    advice = (
        f"still ending after {within:g}s (grace {grace:g}s from SIGTERM to SIGKILL): answered now to beat "
        f"the client's request timeout (no progress token was sent); wait_for_task task_id={task_id} "
        "answers once it has exited, get_task_status shows how it ended"
    )
    return answer_of(Ended, task.record, time.time(), signalled_pids=[], escalated=False, survivors=[], advice=advice)


class _InBackground:
    """An end run in the background whose caller stops waiting for it after a while: what it
    raises before then is the caller's to answer, what it raises after is reported on the task."""

    def __init__(self, ending: Callable[[], Awaitable[Ended]]) -> None:
        self._ending = ending
        self._done = anyio.Event()
        self._ended: Ended | None = None
        self._error: Exception | None = None
        self._abandoned = False

    async def run(self) -> None:
        try:
            self._ended = await self._ending()
        except Exception as exc:
            if self._abandoned:
                raise
            self._error = exc
        finally:
            self._done.set()

    async def outcome(self, within: float | None, progress: ProgressReporter | None, grace: float) -> Ended | None:
        """The end's answer, if it came within ``within`` seconds (None: no limit), telling
        ``progress`` meanwhile; raises what the end raised."""
        try:
            with anyio.move_on_after(math.inf if within is None else within):
                async with anyio.create_task_group() as group:
                    if progress is not None:
                        group.start_soon(report_progress, progress, grace)
                    await self._done.wait()
                    group.cancel_scope.cancel()
        finally:
            self._abandoned = not self._done.is_set()
        if self._error is not None:
            raise self._error
        return self._ended


async def _unowned(state: CoreState, task: Task) -> bool:
    """Whether no server owns the task any more (its server is gone, and it is not ours)."""
    return not is_own(state, task.record.task_id) and await owner_gone(task.record.owner)


async def _record_request(state: CoreState, task: Task) -> None:
    """Record that the task's end was asked for (or that a failed end no longer is). Another
    server's task: written before it is signalled, so that its server reads it at the exit (and
    records ``killed``, not ``failed``)."""
    if is_own(state, task.record.task_id):
        state.save([task.record])
    else:
        await offload.run(offload.REGISTRY, state.registry.update, [task.record])


async def _record_unowned_end(task: Task) -> None:
    """Record the end of a task no server watches (gone, and no server will say so): as its
    server would, from what its runner wrote down if it has one (in a worker thread: a file read)."""
    if task.record.supervised:
        await offload.run(offload.LOGS, orphans.settle_ended, task.record)
    else:
        task.record.mark_ended(TaskState.KILLED, None)


async def end_here(state: CoreState, task: Task, grace: float) -> Ended:
    """End a task's tree on this machine, at its containment level, and verify what is left."""
    record = task.record
    leaders = {record.pid: task.leader()} if record.pid is not None and not task.lingering_known_empty else {}
    # The server leaving (its client gone) ends the task as its shutdown would, not after all of a long grace.
    hurry = Hurry(state.leaving, state.settings.shutdown_grace_seconds)
    outcome = await end_trees(leaders, grace, state.settings.kill_wait_seconds, hurry=hurry)
    with anyio.move_on_after(state.settings.kill_wait_seconds):
        await task.exited.wait()
    if task.running and not outcome.survivors and await _unowned(state, task):
        await _record_unowned_end(task)
    if not outcome.survivors and not task.running:
        await task.settle()
    record = task.record  # another server's task: a fresh copy of its record by now
    return answer_of(
        Ended,
        record,
        time.time(),
        signalled_pids=outcome.signalled,
        escalated=outcome.escalated,
        survivors=[Survivor(pid, cmd, why) for pid, cmd, why in outcome.survivors],
        verified="" if outcome.survivors else await _verified(state, record.containment),
    )


async def _verified(state: CoreState, containment: str) -> str:
    """What an end with no survivor checked, at the task's level; at the subreaper level, also
    the orphans this server holds whose task cannot be told (they end with the server)."""
    text = VERIFIED.get(Level(containment), "")
    if containment != Level.SUBREAPER:
        return text
    find = functools.partial(unclaimed_children, state.local_leader_pids() | state.helper_pids(), claimed_too=False)
    strays = await offload.run(offload.SCANS, find)
    if strays:
        text += (
            f"; {len(strays)} process(es) orphaned to this server from a task that can no longer be told "
            f"(pids {', '.join(str(p.pid) for p in strays)}) are ended when the server exits"
        )
    return text
