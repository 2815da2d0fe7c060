"""The platform seam: what the rest of the package asks of the operating system, in one interface.

Two backends implement it, chosen when first asked (``MCP_BACKGROUNDR_PLATFORM``: ``auto``,
the default, takes ``linux`` on Linux and ``portable`` elsewhere; either can be forced):

``linux``     pidfds for exits, inotify for file events, holes punched with fallocate,
              cgroup / subreaper / marker containment, the machine's socket table.
``portable``  only what POSIX and psutil offer everywhere (macOS, the BSDs): exits by
              waitpid in a thread (children) or by looking every POLL_SECONDS (others),
              file events by stat while somebody watches, heads dropped by fcntl
              (macOS) or by rewriting the log, marker containment, per-process sockets.

    Backend
    ├── containment / protection     choose_containment(), protect_server()
    ├── exits                        exit_handle(), wait_for_exit(), wait_until_ended(), wait_until_gone()
    ├── file events                  file_events()   (inotify, or polled stat)
    ├── log heads                    head_method     (see heads.py: punch, fcntl, rewrite)
    └── sockets                      socket_table(), tree_usage()

Shared by both: spawning in a new session (process.py), terminals (terminal.py), process
scans by session and marker (containment/_find.py), start times (process.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import psutil

from ..config import PLATFORM_ENV
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

    from .containment import Containment
    from .process import Socket, TreeUsage

LINUX = "linux"
PORTABLE = "portable"
CHOICES = ("auto", LINUX, PORTABLE)


class FileEvents(Protocol):
    """Which watched files (or directories) changed: inotify, or looks at them."""

    def add(self, path: Path, events: int = ...) -> int: ...
    def remove(self, handle: int) -> None: ...
    async def changed(self) -> set[int]: ...
    def close(self) -> None: ...


class Backend(Protocol):
    """Everything specific to an operating system that the server, the CLI and tests use."""

    name: str
    head_method: str
    """How a log's head is dropped past its cap (a method of :mod:`heads`)."""
    sees_every_socket: bool
    """Whether :meth:`socket_table` lists every listening socket of the machine (else only those of
    processes that carry a task's marker)."""

    def choose_containment(self, wanted: str, delegated: str | None) -> Containment:
        """The strongest containment level this system offers, at most ``wanted``."""
        ...

    def protect_server(self) -> bool:
        """Keep the server's environment and memory from its tasks (same user); False if it cannot."""
        ...

    def exit_handle(self, popen: subprocess.Popen[bytes]) -> int | None:
        """What :meth:`wait_for_exit` waits on, taken right after the spawn (before any reap)."""
        ...

    async def wait_for_exit(self, popen: subprocess.Popen[bytes], handle: int | None) -> int:
        """Wait until a child exits; reap it and return its returncode (closes ``handle``)."""
        ...

    async def wait_until_ended(self, pid: int, start_time: float | None) -> None:
        """Wait until the process with this pid and start time is gone (any process, not only a child)."""
        ...

    async def wait_until_gone(self, processes: Sequence[psutil.Process], within: float) -> list[psutil.Process]:
        """Wait up to ``within`` seconds for the processes to exit; return those still alive."""
        ...

    def file_events(self, poll_seconds: float) -> FileEvents:
        """A new source of file events (``poll_seconds``: how often a backend without them looks)."""
        ...

    def socket_table(self) -> tuple[list[Socket], dict[str, list[Socket]]]:
        """Listening TCP sockets (blocking: a worker thread's job): those seen, and those of each task."""
        ...

    def tree_usage(self, processes: Sequence[psutil.Process], sockets: Sequence[Socket]) -> TreeUsage:
        """What ``processes`` use, with their listening sockets (``sockets``: from :meth:`socket_table`)."""
        ...


def name_for(wanted: str | None, system: str = sys.platform) -> str:
    """The backend to use: ``wanted`` (auto, linux or portable), auto meaning linux on Linux."""
    choice = (wanted or "auto").strip().lower()
    if choice not in CHOICES:
        raise InvalidArgumentError(PLATFORM_ENV, wanted, f"use one of {', '.join(CHOICES)}")
    if choice == "auto":
        return LINUX if system.startswith("linux") else PORTABLE
    if choice == LINUX and not system.startswith("linux"):
        raise InvalidArgumentError(PLATFORM_ENV, wanted, f"this is {system}, not Linux: use portable (or auto)")
    return choice


@functools.cache
def named(name: str) -> Backend:
    if name == LINUX:
        from .linux import LinuxBackend

        return LinuxBackend()
    from .portable import PortableBackend

    return PortableBackend()


def current() -> Backend:
    """The backend of this process, chosen by ``MCP_BACKGROUNDR_PLATFORM`` (default auto)."""
    return named(name_for(os.environ.get(PLATFORM_ENV)))
