"""On the remote host: keep a hosted task's log under its cap, as the server does locally.

Standard library only. A thread of the task's runner blocks on an inotify watch of the
log (Linux), and only after a write looks at the disk the log takes; past the cap it
punches a hole at the head of the file (fallocate PUNCH_HOLE), so the size and every
cursor keep their meaning and readers find where the kept output starts with SEEK_DATA.
Without inotify or hole punching the log is not capped, and status says nothing was dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from pathlib import Path

from ..logs import files
from .agent_wait import inotify_on

BLOCK = 4096
KEPT_FRACTION = 4
"""A cut keeps a quarter of the cap, which leaves a fast writer room before the next look."""
PAUSE_SECONDS = 0.05
"""After a look, how long writes gather before the next one."""
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def enforce(path: str, cap: int) -> None:
    """If the log takes more than ``cap`` bytes of disk, drop its oldest output."""
    info = os.stat(path)
    if cap <= 0 or info.st_blocks * 512 <= cap:
        return
    start = files.dropped_bytes(Path(path))
    end = (info.st_size - cap // KEPT_FRACTION) // BLOCK * BLOCK
    if end <= start:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start)
    finally:
        os.close(fd)


def _watch(path: str, cap: int, fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            enforce(path, cap)
            time.sleep(PAUSE_SECONDS)


def start_capping(path: str, cap: int) -> None:
    """Cap the log from now on, in a daemon thread of this process (the runner)."""
    if cap <= 0:
        return
    fd = inotify_on(path, blocking=True)
    if fd is not None:
        threading.Thread(target=_watch, args=(path, cap, fd), daemon=True, name="log-cap").start()
