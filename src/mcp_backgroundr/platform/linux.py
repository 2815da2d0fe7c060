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
from dataclasses import dataclass

import anyio
import psutil

from .. import offload
from . import heads, process, sockdiag
from .backend import LINUX
from .containment import Containment, protect_server, still_running
from .inotify import Inotify


@dataclass(frozen=True)
class _SocketTable:
    inodes: frozenset[str]
    """The listening sockets the kernel listed, by inode, when the table was read."""
    sockets: list[process.Socket]
    by_task: dict[str, list[process.Socket]]


_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"
"""The state column of a listening socket in those tables."""


def _listening_inodes() -> frozenset[str]:
    """The inodes of this network namespace's listening TCP sockets: asked of the kernel by netlink
    (see :mod:`.sockdiag`), else read from its tables. Blocking."""
    with contextlib.suppress(OSError):
        return sockdiag.listening_inodes()
    return _listening_inodes_read()


def _listening_inodes_read() -> frozenset[str]:
    """:func:`_listening_inodes` from ``/proc/net/tcp{,6}``: as long to read as the machine's table
    of connections, whatever it holds."""
    found: set[str] = set()
    for table in _TCP_TABLES:
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)  # the header
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _LISTEN:
                    found.add(fields[9])
    return frozenset(found)


class LinuxBackend:
    name = LINUX
    sees_every_socket = True
    head_method = heads.PUNCH

    def __init__(self) -> None:
        self._last_table: _SocketTable | None = None

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
        """The last table again while the kernel lists the same listening sockets and their
        processes live: finding a socket's process reads every process's descriptors (25 ms of
        CPU with 1,000 idle processes here, in the interpreter's lock), the listening sockets
        alone are one small read."""
        inodes = _listening_inodes()
        last = self._last_table
        if last is not None and last.inodes == inodes and all(psutil.pid_exists(pid) for *_, pid in last.sockets):
            return last.sockets, last.by_task
        sockets = process.listening_sockets()
        by_task = process.sockets_by_task(sockets)
        self._last_table = _SocketTable(inodes, sockets, by_task)
        return sockets, by_task

    def tree_usage(self, processes: Sequence[psutil.Process], sockets: Sequence[process.Socket]) -> process.TreeUsage:
        return process.tree_usage(processes, sockets)
