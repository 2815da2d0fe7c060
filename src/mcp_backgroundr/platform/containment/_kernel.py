"""The few kernel calls containment needs that Python does not wrap: prctl, and reaping orphans."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Collection

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def _libc_prctl() -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


_PRCTL = _libc_prctl()
"""Looked up once, here: a child between fork and exec must not load libraries (another thread of
the server may have held the loader's lock when it forked)."""


def _prctl(option: int, value: int) -> bool:
    return _PRCTL is not None and int(_PRCTL(option, ctypes.c_ulong(value), 0, 0, 0)) == 0


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children, instead of init's (kept across
    execve, so a task's main process can be made one before it execs)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> bool:
    """Be killed by SIGKILL when the parent dies, whatever kills it (Linux; elsewhere False)."""
    return sys.platform == "linux" and _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def has_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (a zombie not yet reaped), without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def forbid_inspection() -> bool:
    """Make this process non-dumpable: processes of the same user (its tasks) can no longer
    read its environment, memory or descriptors under /proc, nor ptrace it."""
    return _prctl(PR_SET_DUMPABLE, 0)


def reap_orphans(own_children: Collection[int]) -> int:
    """Collect every exited child that is not one of ``own_children`` (an orphan that came to
    us as subreaper); return how many. Stops at the first exited child of our own: its watcher
    reaps it with its status, and calls this again."""
    reaped = 0
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if found is None or found.si_pid in own_children:
            return reaped
        try:
            os.waitpid(found.si_pid, os.WNOHANG)
        except ChildProcessError:
            return reaped
        reaped += 1
