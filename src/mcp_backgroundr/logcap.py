"""Bounded disk per task: past its cap, the oldest output of a log is dropped.

Dropping punches a hole at the head of the file (fallocate PUNCH_HOLE): the file
keeps its size, so every byte offset, and so every cursor, keeps its meaning, while
the dropped bytes no longer take disk space. Where the kept output starts is read
back from the file itself (lseek SEEK_DATA), so every reader, the CLI included,
agrees on it without any shared state.

The child still writes straight to its log; the server looks at a log only when
inotify says it was written to, so an idle task costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

from .inotify import Inotify
from .logs import dropped_bytes

BLOCK = 4096
KEPT_FRACTION = 4
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def enforce(path: Path, cap: int) -> None:
    """If a log takes more than ``cap`` bytes of disk, drop its oldest output down to a quarter
    of the cap, which leaves a fast writer room before the next check."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_blocks * 512 <= cap:
        return
    start = dropped_bytes(path)
    end = (info.st_size - cap // KEPT_FRACTION) // BLOCK * BLOCK
    if end <= start:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot drop old output of {path}: {os.strerror(error)}")
    finally:
        os.close(fd)


class LogCapper:
    """Keeps every watched log under its cap, acting on each write inotify reports."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._caps: dict[int, tuple[Path, int]] = {}
        self._watches: dict[Path, int] = {}

    def watch(self, path: Path, cap: int) -> None:
        wd = self._inotify.add(path)
        self._caps[wd] = (path, cap)
        self._watches[path] = wd
        enforce(path, cap)

    def forget(self, path: Path) -> None:
        wd = self._watches.pop(path, None)
        if wd is not None:
            self._caps.pop(wd, None)
            self._inotify.remove(wd)

    async def run(self) -> None:
        """Enforce caps until cancelled."""
        try:
            while True:
                for wd in await self._inotify.changed():
                    if wd in self._caps:
                        path, cap = self._caps[wd]
                        with contextlib.suppress(OSError):
                            enforce(path, cap)
        finally:
            self._inotify.close()
