"""Ending everything this server owns when it exits, all at once, within a bounded time."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import anyio

from .. import offload
from ..errors import RegistryError, warn
from ..platform.containment import end_trees, unclaimed_children
from .place import ShutdownWork
from .state import CoreState
from .task import Task

SHUTDOWN_REASON = "server shutdown"


async def end_all(state: CoreState) -> int:
    """End, at every place at once, this server's tasks not meant to outlive it.
    Returns how many tasks still had processes to end."""
    # Every place looks first (here: which orphans are strays) before any starts ending.
    works = [await place.prepare_shutdown(state.own_at(place)) for place in state.places]
    counts: list[int] = []

    async def run(work: ShutdownWork) -> None:
        counts.append(await work())

    async with anyio.create_task_group() as group:
        for work in works:
            group.start_soon(run, work)
    state.save([t.record for t in state.own.values()])
    with contextlib.suppress(RegistryError):  # reported by the registry
        await offload.run(offload.REGISTRY, state.registry.flush)
    return sum(counts)


async def prepare_here(state: CoreState, tasks: Sequence[Task]) -> ShutdownWork:
    """Mark the local tasks not meant to outlive the server, and find the orphans that came to
    us as subreaper from a task that can no longer be told (they go with us)."""
    live = [t for t in tasks if t.record.pid is not None and not t.lingering_known_empty and not t.record.keep_running]
    for task in live:
        task.record.request_end(SHUTDOWN_REASON)
    leaders = {t.record.pid: t.leader() for t in live if t.record.pid is not None}
    leaders_and_helpers = state.local_leader_pids() | state.helper_pids()
    strays = await offload.run(offload.SCANS, unclaimed_children, leaders_and_helpers)

    async def end_here() -> int:
        settings = state.settings
        outcome = await end_trees(leaders, settings.shutdown_grace_seconds, settings.shutdown_kill_wait_seconds, strays)
        with anyio.move_on_after(settings.shutdown_kill_wait_seconds):
            for task in live:
                await task.exited.wait()
        for task in live:
            if not task.running:
                await task.settle()  # a cgroup still holding a survivor is not removed
        for pid, command, reason in outcome.survivors:
            warn(f"left running at shutdown: pid {pid} ({command}): {reason}")
        return len(outcome.ended_tasks)

    return end_here
