"""The few kernel calls containment needs that Python does not wrap: prctl, and reaping orphans."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Collection

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children, instead of init's."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


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
