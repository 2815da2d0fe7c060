"""Bounded disk per task: past its cap, the oldest output of a log is dropped.

Dropping punches a hole at the head of the file (fallocate PUNCH_HOLE): the file
keeps its size, so every byte offset, and so every cursor, keeps its meaning, while
the dropped bytes no longer take disk space. Where the kept output starts is read
back from the file itself (lseek SEEK_DATA), so every reader, the CLI included,
agrees on it without any shared state.

The child still writes straight to its log; the server looks at a log only after
inotify says it was written to, and then only as often as its writer needs, so an
idle task costs nothing.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from . import offload
from .inotify import Inotify
from .logs import dropped_bytes, log_size

BLOCK = 4096
KEPT_FRACTION = 4
MAX_PAUSE_SECONDS = 0.25
"""Longest pause between two looks at a log being written."""
RATE_MEMORY = 0.9
QUIET_SECONDS = 0.2
"""A log that did not grow for this long goes back to inotify."""
MIN_PAUSE_SECONDS = 0.0002
"""The shortest pause between two looks, so that a pacing thread never spins."""
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


@dataclass
class _Log:
    path: Path
    cap: int
    wd: int | None = None
    """Its inotify watch, while it is quiet."""
    paced: bool = False
    """Whether a pacing loop is looking at it (it is being written)."""
    last_size: int = 0
    last_look: float = 0.0
    fastest: float = 0.0
    """The fastest recent write rate, in bytes per second, fading slowly."""


class LogCapper:
    """Keeps every watched log under its cap, at no cost while the log is quiet.

    A quiet log is watched by inotify. Its first write hands it to a pacing loop and drops
    the watch (a watch costs something on every write: 14 % on a 1 GiB `head` here). The
    loop looks at the log as often as its writer needs to fill the room left under its cap,
    and gives it back to inotify once it has stopped growing.
    """

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._logs: dict[Path, _Log] = {}
        self._by_wd: dict[int, _Log] = {}
        self.on_failure: Callable[[Path, str], None] | None = None
        """Told when a log cannot be kept under its cap (it is no longer looked at)."""
        self._to_look_at: list[_Log] = []
        self._new = anyio.Event()
        self._stopped = False

    def watch(self, path: Path, cap: int) -> None:
        """Keep ``path`` under ``cap`` from now on; a first look (which may have a lot to drop, for
        a log adopted from another server) is made by the capper's own loop, not by the caller."""
        log = self._logs[path] = _Log(path, cap)
        self._listen(log)
        self._to_look_at.append(log)
        self._new.set()

    def forget(self, path: Path) -> None:
        log = self._logs.pop(path, None)
        if log is not None:
            self._quiet_down(log)

    def _listen(self, log: _Log) -> None:
        log.wd = self._inotify.add(log.path)
        self._by_wd[log.wd] = log

    def _quiet_down(self, log: _Log) -> None:
        if log.wd is not None:
            self._by_wd.pop(log.wd, None)
            self._inotify.remove(log.wd)
            log.wd = None

    async def run(self) -> None:
        """Enforce caps until cancelled."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._look_at_new, group)
                while True:
                    for wd in await self._inotify.changed():
                        log = self._by_wd.get(wd)
                        if log is not None:
                            self._start_pacing(log, group)
        finally:
            self._stopped = True
            self._inotify.close()

    async def _look_at_new(self, group: TaskGroup) -> None:
        while True:
            await self._new.wait()
            self._new = anyio.Event()
            logs, self._to_look_at = self._to_look_at, []
            for log in logs:
                if log.path in self._logs:
                    self._start_pacing(log, group)

    def _start_pacing(self, log: _Log, group: TaskGroup) -> None:
        if log.paced:
            return
        self._quiet_down(log)
        log.paced = True
        # Measure the writer's speed from now on, not since it was last quiet.
        log.last_size, log.last_look = log_size(log.path), time.monotonic()
        group.start_soon(self._pace, log)

    async def _pace(self, log: _Log) -> None:
        """Pace a log being written until it stops growing, then hand it back to inotify.

        The looks run in a worker thread of their own: a fast writer under a small cap needs
        hundreds of looks a second, and a hole punch may wait on the device (a disk that
        discards synchronously), so the event loop takes no part in them.
        """
        try:
            while True:
                size = await anyio.to_thread.run_sync(
                    self._pace_until_quiet, log, abandon_on_cancel=True, limiter=offload.PACING.limiter()
                )
                if size is None or log.path not in self._logs:
                    return
                self._listen(log)
                if log_size(log.path) <= size:  # nothing slipped in while the watch was set up
                    return
                self._quiet_down(log)
        except FileNotFoundError:
            return  # the log is gone (the task was removed)
        except OSError as exc:
            if self.on_failure is not None:
                self.on_failure(log.path, f"its log is no longer capped ({exc.strerror or exc})")
        finally:
            log.paced = False

    def _pace_until_quiet(self, log: _Log) -> int | None:
        """Blocking: look at the log as often as its writer needs to fill the room left under its
        cap; answer its size once it has not grown for QUIET_SECONDS (None once it is forgotten)."""
        while log.path in self._logs and not self._stopped:
            size, allocated = enforce(log.path, log.cap)
            now = time.monotonic()
            grew = size > log.last_size
            if grew:
                rate = (size - log.last_size) / max(now - log.last_look, 1e-6)
                log.fastest = max(rate, log.fastest * RATE_MEMORY)
                log.last_size, log.last_look = size, now
            elif now - log.last_look >= QUIET_SECONDS:
                return size
            pause = min(max(0.0, log.cap - allocated) / log.fastest if log.fastest else 0.0, MAX_PAUSE_SECONDS)
            if not grew:  # it paused: look again soon, as fast as it might resume
                pause = min(max(pause, MIN_PAUSE_SECONDS), log.last_look + QUIET_SECONDS - now)
            time.sleep(max(pause, MIN_PAUSE_SECONDS))  # a sleep lets the event loop have the interpreter
        return None
