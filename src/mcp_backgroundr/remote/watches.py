"""Remote exits, learnt as they happen: one long-lived watch per host.

A remote task's exit must be known without a call (for ``max_runtime_seconds``, restart
policies, exit notifications and the registry other readers see). For each host that runs
tasks of this server, one request stays open on a session of its own over the host's
multiplexed connection: the agent blocks on its runners' exits (pidfds) and answers once,
when one ends, and the watch is made again. A task started meanwhile wakes the watch under
way (an empty line to the agent), which answers at once and is made again with that task
too. While the host cannot be reached, the watch is tried again after a growing pause
(and at once when a task is started there); nothing is asked while no task runs there.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import anyio

from ..core.task import Task
from ..errors import BackgroundrError
from .tasks import RemoteTasks

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 60.0
"""While a host cannot be reached, its watch is tried again after 2, 4, 8 ... up to this many seconds."""

Spawn = Callable[[str, Callable[[], Awaitable[None]]], None]
"""Runs (what, work) in the background of the server."""


class ExitWatches:
    """The watches of one server: ``track`` a running remote task, and ``ended`` hears of its exit."""

    def __init__(self, remote: RemoteTasks, spawn: Spawn, ended: Callable[[Task], None]) -> None:
        self.remote = remote
        self._spawn = spawn
        self._ended = ended
        self._watched: dict[str, dict[str, Task]] = {}
        """Host -> the running tasks its watch covers (task id -> task)."""
        self._wakes: dict[str, anyio.Event] = {}
        """Host -> the event that wakes its watch under way (a host has a watch while it has an event)."""

    def track(self, task: Task) -> None:
        """Watch a running remote task's exit from now on."""
        host = task.record.host
        if host is None or not task.running or self.remote.closed:
            return
        self._watched.setdefault(host, {})[task.record.task_id] = task
        if host in self._wakes:
            self._wakes[host].set()
        else:
            self._wakes[host] = anyio.Event()
            self._spawn(f"watching the exits of its tasks on host {host}", functools.partial(self._watch, host))

    async def _watch(self, host: str) -> None:
        pause = FIRST_RETRY_SECONDS
        try:
            while not self.remote.closed and (running := [t for t in self._watched[host].values() if t.running]):
                wake = self._wakes[host] = anyio.Event()
                try:
                    ended = await self.remote.watch(host, running, wake)
                except BackgroundrError:
                    with anyio.move_on_after(pause):
                        await wake.wait()
                    pause = min(pause * 2, MAX_RETRY_SECONDS)
                    continue
                pause = FIRST_RETRY_SECONDS
                for task in ended:
                    self._ended(task)
                self._watched[host] = {i: t for i, t in self._watched[host].items() if t.running}
        finally:
            self._wakes.pop(host, None)
            self._watched.pop(host, None)
