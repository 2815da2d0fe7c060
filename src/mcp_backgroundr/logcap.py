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

import ctypes
import os
import time
from pathlib import Path

import anyio

from .inotify import Inotify
from .logs import dropped_bytes

BLOCK = 4096
KEPT_FRACTION = 4
MAX_PAUSE_SECONDS = 0.05
RATE_MEMORY = 0.9
MIN_PAUSE_SECONDS = 0.002
"""Shorter pauses are not worth a trip through the event loop: look again at once."""
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def enforce(path: Path, cap: int) -> tuple[int, int]:
    """If a log takes more than ``cap`` bytes of disk, drop its oldest output down to a quarter
    of the cap, which leaves a fast writer room before the next look.

    Returns the log's size and the disk it takes now.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return 0, 0
    allocated = info.st_blocks * 512
    if allocated <= cap:
        return info.st_size, allocated
    start = dropped_bytes(path)
    end = (info.st_size - cap // KEPT_FRACTION) // BLOCK * BLOCK
    if end <= start:
        return info.st_size, allocated
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot drop old output of {path}: {os.strerror(error)}")
    finally:
        os.close(fd)
    return info.st_size, max(0, allocated - (end - start))


class LogCapper:
    """Keeps every watched log under its cap, acting on each write inotify reports."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._caps: dict[int, tuple[Path, int]] = {}
        self._watches: dict[Path, int] = {}
        self._last_seen: dict[int, tuple[float, int, float]] = {}
        """(monotonic time, size, fastest recent write rate) of each log at its last look."""

    def watch(self, path: Path, cap: int) -> None:
        wd = self._inotify.add(path)
        self._caps[wd] = (path, cap)
        self._watches[path] = wd
        enforce(path, cap)

    def _look(self, wd: int) -> float:
        """Enforce one log's cap; return how long its writer needs to fill the room left."""
        path, cap = self._caps[wd]
        now = time.monotonic()
        try:
            size, allocated = enforce(path, cap)
        except OSError:
            return MAX_PAUSE_SECONDS
        previous_time, previous_size, fastest = self._last_seen.get(wd, (now, size, 0.0))
        if now > previous_time and size > previous_size:
            # The fastest recent rate, fading slowly: a pause judged by it never lets the log
            # run far past its cap when the writer speeds up again.
            fastest = max((size - previous_size) / (now - previous_time), fastest * RATE_MEMORY)
        self._last_seen[wd] = (now, size, fastest)
        return max(0.0, cap - allocated) / fastest if fastest else 0.0

    def forget(self, path: Path) -> None:
        wd = self._watches.pop(path, None)
        if wd is not None:
            self._caps.pop(wd, None)
            self._last_seen.pop(wd, None)
            self._inotify.remove(wd)

    async def run(self) -> None:
        """Enforce caps until cancelled."""
        try:
            while True:
                changed = [wd for wd in await self._inotify.changed() if wd in self._caps]
                pause = min((self._look(wd) for wd in changed), default=MAX_PAUSE_SECONDS)
                # A fast writer sends an event per write: let its writes gather before looking
                # again, for as long as it takes it to fill the room left under its cap.
                if pause >= MIN_PAUSE_SECONDS:
                    await anyio.sleep(min(pause, MAX_PAUSE_SECONDS))
        finally:
            self._inotify.close()
