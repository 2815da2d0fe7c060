"""Ending everything this server owns when it exits, all at once, within a bounded time."""

from __future__ import annotations

import contextlib
import sys

import anyio

from .. import offload
from ..errors import RegistryError
from ..platform.containment import end_trees, unclaimed_children
from .state import CoreState
from .task import Task

SHUTDOWN_REASON = "server shutdown"
REMOTE_SHUTDOWN_SECONDS = 0.6
"""At shutdown, how long remote hosts get (beyond the grace) to end the tasks there."""


async def end_all(state: CoreState) -> int:
    """End the local tasks' trees and, beside them, the remote tasks not meant to outlive us.
    Returns how many tasks still had processes to end."""
    settings = state.settings
    live = [
        t
        for t in state.own.values()
        if t.record.pid is not None
        and not t.lingering_known_empty
        and not t.record.keep_running
        and t.record.host is None
    ]
    for task in live:
        task.record.request_end(SHUTDOWN_REASON)
    leaders = {t.record.pid: t.leader() for t in live if t.record.pid is not None}
    doomed = [t for t in state.own.values() if t.record.host is not None and t.running and not t.record.keep_running]
    # Orphans that came to us as subreaper from a task that can no longer be told go with us.
    leaders_and_helpers = state.local_leader_pids() | state.remote.connections.helper_pids()
    strays = await offload.run(offload.SCANS, unclaimed_children, leaders_and_helpers)
    async with anyio.create_task_group() as group:
        group.start_soon(_end_remote, state, doomed)
        outcome = await end_trees(leaders, settings.shutdown_grace_seconds, settings.shutdown_kill_wait_seconds, strays)
        with anyio.move_on_after(settings.shutdown_kill_wait_seconds):
            for task in live:
                await task.exited.wait()
    for task in live:
        if not task.running:
            await task.settle()  # a cgroup still holding a survivor is not removed
    state.save([t.record for t in state.own.values()])
    with contextlib.suppress(RegistryError):  # reported by the registry
        await offload.run(offload.REGISTRY, state.registry.flush)
    for pid, command, reason in outcome.survivors:
        print(f"mcp-backgroundr: left running at shutdown: pid {pid} ({command}): {reason}", file=sys.stderr)
    return len(outcome.ended_tasks) + len(doomed)


async def _end_remote(state: CoreState, doomed: list[Task]) -> None:
    """End the remote tasks not meant to outlive the server (as far as their hosts answer in
    time), then close the SSH connections."""
    grace = state.settings.shutdown_grace_seconds
    for task in doomed:
        task.record.request_end(SHUTDOWN_REASON)
    with anyio.move_on_after(grace + REMOTE_SHUTDOWN_SECONDS):
        await state.remote.end_all(doomed, grace, SHUTDOWN_REASON)
    await state.remote.close()
