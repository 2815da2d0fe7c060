"""Ending one task's whole process tree, and saying what was checked afterwards."""

from __future__ import annotations

import functools
import time

import anyio

from .. import offload
from ..platform.containment import Level, end_trees, unclaimed_children
from ..results import Ended, Survivor
from .lookup import find_task
from .state import CoreState
from .task import Task, answer_of

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
    answer once it is gone; ``reason`` is recorded."""
    task = await find_task(state, task_id)
    with anyio.CancelScope(shield=True):
        if task.record.request_end(reason):
            state.save([task.record])
        ended = await state.place_of(task.record).end(task, grace, reason)
    return ended


async def end_here(state: CoreState, task: Task, grace: float) -> Ended:
    """End a task's tree on this machine, at its containment level, and verify what is left."""
    record = task.record
    leaders = {record.pid: task.leader()} if record.pid is not None and not task.lingering_known_empty else {}
    outcome = await end_trees(leaders, grace, state.settings.kill_wait_seconds)
    with anyio.move_on_after(state.settings.kill_wait_seconds):
        await task.exited.wait()
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
    find = functools.partial(unclaimed_children, state.local_leader_pids(), claimed_too=False)
    strays = await offload.run(offload.SCANS, find)
    if strays:
        text += (
            f"; {len(strays)} process(es) orphaned to this server from a task that can no longer be told "
            f"(pids {', '.join(str(p.pid) for p in strays)}) are ended when the server exits"
        )
    return text
