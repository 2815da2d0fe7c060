"""The portable backend: only what POSIX and psutil offer on macOS and the BSDs too.

No pidfd, inotify, fallocate, prctl or cgroups:

- a child's exit is its ``waitpid``, in a daemon thread of its own (blocked, not polling),
  which closes a pipe the event loop waits on;
  another process's exit is a kqueue event where the system has kqueue (macOS, the BSDs;
  untested here), else a look every POLL_SECONDS;
- file events are looks at the watched paths (:mod:`.polled`), only while somebody watches;
- a log's head is dropped with ``fcntl(F_PUNCHHOLE)`` on macOS (untested here) and by
  rewriting the log elsewhere (see :mod:`.heads`);
- containment is the marker level: the session, the process group and the marker;
- listening sockets are read per process (``Process.net_connections``, which macOS allows
  for one's own processes), not from the machine's table (which needs root there).
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio
import psutil

from .. import offload
from ..config import CONTAINMENT_ENV, TASK_ID_ENV
from ..errors import InvalidArgumentError
from . import heads, process
from .backend import PORTABLE
from .containment import Containment, Level, is_gone, still_running
from .polled import PolledEvents

POLL_SECONDS = 0.05
"""How often the end of a process that is not our child is looked for (without kqueue)."""
GONE_POLL_SECONDS = 0.01
"""How often processes being ended are looked at."""


class PortableBackend:
    name = PORTABLE
    sees_every_socket = False
    head_method = heads.method_for(PORTABLE)

    def choose_containment(self, wanted: str, delegated: str | None) -> Containment:
        del delegated
        level = wanted.strip().lower()
        if level not in ("auto", Level.MARKER):
            raise InvalidArgumentError(
                CONTAINMENT_ENV,
                wanted,
                "the portable platform backend contains tasks at the marker level only; use auto or marker, "
                "or the linux backend (MCP_BACKGROUNDR_PLATFORM=linux) on Linux",
            )
        return Containment(Level.MARKER)

    def protect_server(self) -> bool:
        return False  # no portable way to forbid a same-user process from inspecting the server

    def exit_handle(self, popen: subprocess.Popen[bytes]) -> int | None:
        """A pipe that turns readable once the child has exited: a daemon thread blocks in its
        ``waitpid`` and then closes the write end (a daemon, so that a server exiting while a
        keep_running task runs on is not held back by it)."""
        readable, writable = os.pipe()
        os.set_inheritable(readable, False)

        def reap() -> None:
            try:
                popen.wait()
            finally:
                os.close(writable)

        threading.Thread(target=reap, name=f"exit of {popen.pid}", daemon=True).start()
        return readable

    async def wait_for_exit(self, popen: subprocess.Popen[bytes], handle: int | None) -> int:
        assert handle is not None
        try:
            await anyio.wait_readable(handle)
        finally:
            os.close(handle)
        return popen.wait()

    async def wait_until_ended(self, pid: int, start_time: float | None) -> None:
        if hasattr(select, "kqueue"):  # macOS and the BSDs: told by the kernel (untested here)
            await _kqueue_exit(pid, start_time)
            return
        while await offload.run(offload.SCANS, _still_runs, pid, start_time):  # noqa: ASYNC110 -- no exit event
            await anyio.sleep(POLL_SECONDS)

    async def wait_until_gone(self, processes: Sequence[psutil.Process], within: float) -> list[psutil.Process]:
        deadline = time.monotonic() + within
        alive = await offload.run(offload.SCANS, still_running, processes)
        while alive and time.monotonic() < deadline:
            await anyio.sleep(min(GONE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            alive = await offload.run(offload.SCANS, still_running, alive)
        return alive

    def file_events(self, poll_seconds: float) -> PolledEvents:
        return PolledEvents(poll_seconds)

    def socket_table(self) -> tuple[list[process.Socket], dict[str, list[process.Socket]]]:
        """The listening sockets of every process that carries a task's marker."""
        sockets: list[process.Socket] = []
        by_task: dict[str, list[process.Socket]] = {}
        for candidate in psutil.process_iter(["environ"], ad_value=None):
            task_id = (candidate.info.get("environ") or {}).get(TASK_ID_ENV)
            if task_id is None:
                continue
            found = process.own_sockets([candidate])
            sockets += found
            if found:
                by_task.setdefault(task_id, []).extend(found)
        return sockets, by_task

    def tree_usage(self, processes: Sequence[psutil.Process], sockets: Sequence[process.Socket]) -> process.TreeUsage:
        del sockets  # read from the processes themselves: a task's process may lack the marker
        return process.tree_usage(processes, process.own_sockets(processes))


def _still_runs(pid: int, start_time: float | None) -> bool:
    """Whether the process of this pid and start time runs (a zombie has ended)."""
    try:
        return process.same_process(pid, start_time) and not is_gone(psutil.Process(pid))
    except psutil.Error:
        return False


async def _kqueue_exit(pid: int, start_time: float | None) -> None:
    """Wait for the exit of any process through kqueue (macOS, the BSDs; untested here)."""
    kernel: Any = select  # kqueue is absent from Linux's select module, which mypy checks against
    queue = kernel.kqueue()
    try:
        event = kernel.kevent(
            pid, filter=kernel.KQ_FILTER_PROC, flags=kernel.KQ_EV_ADD | kernel.KQ_EV_ONESHOT, fflags=kernel.KQ_NOTE_EXIT
        )
        try:
            queue.control([event], 0, 0)
        except ProcessLookupError:
            return
        if await offload.run(offload.SCANS, process.same_process, pid, start_time):  # checked after the event is armed
            await anyio.wait_readable(queue.fileno())
    finally:
        queue.close()
