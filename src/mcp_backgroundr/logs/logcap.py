"""Bounded disk per task: past its cap, the oldest output of a log is dropped.

Dropping makes a hole at the head of the file (see :mod:`holes`, shared with the runner of a
task that outlives its server, and the platform's ``heads``): the file keeps its size, so
every byte offset, and so every cursor, keeps its meaning, while the dropped bytes no longer
take disk space. Where the kept output starts is read back from the file itself (lseek
SEEK_DATA), so every reader, the CLI included, agrees on it without any shared state.

The child still writes straight to its log; the server looks at a log only after
the platform's file events say it was written to (inotify: an idle task costs nothing;
the portable backend looks at a quiet log every QUIET_LOOK_SECONDS), and then only as
often as its writer needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from .. import offload
from ..platform import backend, heads
from .files import log_size
from .holes import QUIET_LOOK_SECONDS, RETRY_SECONDS, Pace, Retries, enforce


@dataclass
class _Log:
    path: Path
    cap: int
    wd: int | None = None
    """Its file-event watch, while it is quiet."""
    paced: bool = False
    """Whether a pacing loop is looking at it (it is being written)."""
    pace: Pace = field(default_factory=lambda: Pace(0))
    retries: Retries = field(default_factory=Retries)
    """When to try again after a failure to drop its head, and which failure is news."""


class LogCapper:
    """Keeps every watched log under its cap, at no cost while the log is quiet.

    A quiet log is watched by the platform's file events (inotify). Its first write hands it
    to a pacing loop and drops the watch (a watch costs something on every write: 14 % on a 1 GiB `head` here). The
    loop looks at the log as often as its writer needs to fill the room left under its cap,
    and gives it back to the file events once it has stopped growing.
    """

    def __init__(self, on_trouble: Callable[[Path, str], None] | None = None) -> None:
        """``on_trouble`` is told when a log could not be kept under its cap, once a cause (it is
        tried again: see RETRY_SECONDS)."""
        self._events = backend.current().file_events(QUIET_LOOK_SECONDS)
        self._drop = heads.dropper(backend.current().head_method)
        self._logs: dict[Path, _Log] = {}
        self._by_wd: dict[int, _Log] = {}
        self.on_trouble = on_trouble
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
        log.wd = self._events.add(log.path)
        self._by_wd[log.wd] = log

    def _quiet_down(self, log: _Log) -> None:
        if log.wd is not None:
            self._by_wd.pop(log.wd, None)
            self._events.remove(log.wd)
            log.wd = None

    async def run(self) -> None:
        """Enforce caps until cancelled."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._look_at_new, group)
                while True:
                    for wd in await self._events.changed():
                        log = self._by_wd.get(wd)
                        if log is not None:
                            self._start_pacing(log, group)
        finally:
            self._stopped = True
            self._events.close()

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
        group.start_soon(self._pace, log)

    async def _pace(self, log: _Log) -> None:
        """Pace a log being written until it stops growing, then hand it back to the file events.

        The looks run in a thread of their own, below the event loop's CPU priority: a fast writer
        under a small cap needs hundreds of looks a second, and a hole punch may wait on the
        device (a disk that discards synchronously), so the event loop takes no part in them.
        """
        try:
            while True:
                pause = await self._paced_until_quiet(log)
                if pause is None:
                    return
                await anyio.sleep(pause)  # a try again after a failure to cap it
        finally:
            log.paced = False

    async def _paced_until_quiet(self, log: _Log) -> float | None:
        """Pace the log until it is quiet and watched again, or forgotten, or gone (None); after a
        failure to cap it, reported once a cause, the pause before the caller tries again."""
        try:
            while True:
                size = await offload.run(offload.PACING, self._pace_until_quiet, log, abandon_on_cancel=True)
                if size is None or log.path not in self._logs:
                    return None
                log.retries.worked()
                self._listen(log)
                grown = await offload.run(offload.PACING, log_size, log.path)
                if grown <= size:  # nothing slipped in while the watch was set up
                    return None
                self._quiet_down(log)
        except FileNotFoundError:
            return None  # the log is gone (the task was removed)
        except OSError as exc:
            self._quiet_down(log)
            cause, pause = log.retries.failed(exc)
            if cause is not None and self.on_trouble is not None:
                self.on_trouble(
                    log.path, f"its log could not be capped ({cause}); tried again every {RETRY_SECONDS[1]:g} s at most"
                )
            return pause if log.path in self._logs else None

    def _pace_until_quiet(self, log: _Log) -> int | None:
        """Blocking: look at the log as often as its writer needs to fill the room left under its
        cap; answer its size once it has not grown for a while (None once it is forgotten)."""
        log.pace.restart(log_size(log.path))
        while log.path in self._logs and not self._stopped:
            size, allocated = enforce(log.path, log.cap, self._drop)
            pause = log.pace.next_pause(log.cap, size, allocated)
            if pause is None:
                return size
            time.sleep(pause)  # a sleep lets the event loop have the interpreter
        return None
