"""Whether a process is already bound to die of a signal it was sent, so that an end says SIGKILL
was needed only when it was.

A process sent SIGTERM is not gone at once: the kernel has yet to deliver it, and a grace of 0
sends SIGKILL in that instant. What the kernel holds for the process tells whether it would have
died anyway: a signal whose default action ends it, pending, that it neither blocks, ignores nor
catches (or the SIGKILL the kernel adds to every thread once a fatal signal is under way), or an
exit already begun.

Linux only (``/proc/PID/status``); elsewhere nothing is known, and a process counts as alive.
Standard library only: shipped to remote hosts with the agent.
"""

from __future__ import annotations

import os
import signal

_FATAL_BY_DEFAULT = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGKILL,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
    signal.SIGALRM,
    signal.SIGTERM,
)
_FATAL_MASK = sum(1 << (signum - 1) for signum in _FATAL_BY_DEFAULT)
_KILL_MASK = 1 << (signal.SIGKILL - 1)
_GONE_STATES = (b"Z", b"X")
_PF_EXITING = 0x4
_FLAGS_FIELD = 6
"""The index of the flags in /proc/PID/stat's fields after the command name (field 9 of the file)."""
_HAS_PROC = os.path.exists("/proc/self/status")


def _exiting(pid: int) -> bool:
    """Whether the process has begun to exit (PF_EXITING, in ``/proc/PID/stat``'s flags): its pending
    signals may be flushed already, before it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            after_name = stat.read().rsplit(b")", 1)[1].split()
        return bool(int(after_name[_FLAGS_FIELD]) & _PF_EXITING)
    except (OSError, IndexError, ValueError):
        return False


def dying(pid: int) -> bool:
    """Whether process ``pid`` is gone or will die of a signal already pending, whatever is sent next."""
    if not _HAS_PROC:
        return False
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    fields = dict(line.split(b":", 1) for line in text.splitlines() if b":" in line)
    state = fields.get(b"State", b"").strip()[:1]
    if state in _GONE_STATES or _exiting(pid):
        return True
    try:
        pending = int(fields[b"SigPnd"], 16) | int(fields[b"ShdPnd"], 16)
        handled = int(fields[b"SigBlk"], 16) | int(fields[b"SigIgn"], 16) | int(fields[b"SigCgt"], 16)
    except (KeyError, ValueError):
        return False
    return bool(pending & _KILL_MASK or pending & _FATAL_MASK & ~handled)
