"""The Linux backend: pidfds, inotify, holes punched with fallocate, cgroups or a subreaper.

Exits are seen without polling (a pidfd turns readable on the event loop), file events come
from inotify, and containment takes the strongest level the machine offers (see
:mod:`.containment`). The socket table is the machine's, read once for every task.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence

import anyio
import psutil

from .. import offload
from . import heads, process
from .backend import LINUX
from .containment import Containment, protect_server, still_running
from .inotify import Inotify


class LinuxBackend:
    name = LINUX
    head_method = heads.PUNCH

    def choose_containment(self, wanted: str, delegated: str | None) -> Containment:
        return Containment.choose(wanted, delegated)

    def protect_server(self) -> bool:
        return protect_server()

    def exit_handle(self, popen: subprocess.Popen[bytes]) -> int | None:
        # Taken before anything can reap the child, so its pid cannot have been reused.
        return os.pidfd_open(popen.pid)

    async def wait_for_exit(self, popen: subprocess.Popen[bytes], handle: int | None) -> int:
        assert handle is not None
        try:
            if popen.returncode is None:
                await anyio.wait_readable(handle)
        finally:
            os.close(handle)
        return popen.wait()

    async def wait_until_ended(self, pid: int, start_time: float | None) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            # Checked after opening: the pid cannot change under us.
            if await offload.run(offload.SCANS, process.same_process, pid, start_time):
                await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)

    async def wait_until_gone(self, processes: Sequence[psutil.Process], within: float) -> list[psutil.Process]:
        pidfds: list[int] = []
        try:
            for member in processes:
                with contextlib.suppress(OSError):
                    pidfds.append(os.pidfd_open(member.pid))
            with anyio.move_on_after(within):
                for pidfd in pidfds:
                    await anyio.wait_readable(pidfd)
        finally:
            for pidfd in pidfds:
                os.close(pidfd)
        return await offload.run(offload.SCANS, still_running, processes)

    def file_events(self, poll_seconds: float) -> Inotify:
        del poll_seconds  # inotify tells at once
        return Inotify()

    def socket_table(self) -> tuple[list[process.Socket], dict[str, list[process.Socket]]]:
        sockets = process.listening_sockets()
        return sockets, process.sockets_by_task(sockets)

    def tree_usage(self, processes: Sequence[psutil.Process], sockets: Sequence[process.Socket]) -> process.TreeUsage:
        return process.tree_usage(processes, sockets)
