"""File events: Linux inotify through ctypes, and the watches waits share over the backend's events.

The standard library has no inotify binding and psutil does not cover it; :class:`Inotify`
is the small part we need (IN_MODIFY on files), used by the linux backend. :class:`WriteWatches`
serves every waiter from the platform backend's file events (inotify, or polled looks).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import anyio

from . import backend

_IN_MODIFY = 0x00000002
ENTRY_REMOVED = 0x00000200 | 0x00000040
"""IN_DELETE | IN_MOVED_FROM: an entry of a watched directory was deleted or renamed away."""
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify instance watching files for writes."""

    def __init__(self) -> None:
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def add(self, path: Path, events: int = _IN_MODIFY) -> int:
        """Watch a file for writes (or other ``events``); return its watch descriptor."""
        wd: int = _libc.inotify_add_watch(self._fd, os.fsencode(path), events)
        if wd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot watch {path}: {os.strerror(error)}")
        return wd

    def remove(self, wd: int) -> None:
        _libc.inotify_rm_watch(self._fd, wd)

    async def changed(self) -> set[int]:
        """Wait until some watched file is written to; return the watch descriptors that were."""
        await anyio.wait_readable(self._fd)
        written: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._fd, _READ_SIZE):
                offset = 0
                while offset < len(data):
                    wd, _mask, _cookie, name_length = _EVENT_HEADER.unpack_from(data, offset)
                    written.add(wd)
                    offset += _EVENT_HEADER.size + name_length
        return written

    def close(self) -> None:
        os.close(self._fd)


class _Subscriber:
    def __init__(self) -> None:
        self.written = anyio.Event()


POLL_SECONDS = 0.025
"""On a backend without file events (portable), how often a watched file is looked at."""


class WriteWatches:
    """One source of file events (the platform backend's: inotify, or looks at the files) for
    every wait on a log: a few hundred concurrent waits take one inotify descriptor and one
    watch per log, not one instance each (the per-user limit is 128)."""

    def __init__(self) -> None:
        self._inotify = backend.current().file_events(POLL_SECONDS)
        self._subscribers: dict[int, set[_Subscriber]] = {}

    @contextlib.contextmanager
    def watching(self, path: Path, events: int = _IN_MODIFY) -> Iterator[WrittenTo]:
        """Be told of writes to ``path`` (or other ``events``) while inside the block."""
        wd = self._inotify.add(path, events)  # the same file gives the same watch descriptor
        subscriber = _Subscriber()
        self._subscribers.setdefault(wd, set()).add(subscriber)
        try:
            yield WrittenTo(subscriber)
        finally:
            others = self._subscribers.get(wd, set())
            others.discard(subscriber)
            if not others:
                self._subscribers.pop(wd, None)
                self._inotify.remove(wd)

    async def run(self) -> None:
        """Pass writes on to whoever waits for them, until cancelled."""
        try:
            while True:
                for wd in await self._inotify.changed():
                    for subscriber in self._subscribers.get(wd, ()):
                        subscriber.written.set()
        finally:
            self._inotify.close()


class WrittenTo:
    """Writes to one watched file, as one waiter sees them."""

    def __init__(self, subscriber: _Subscriber) -> None:
        self._subscriber = subscriber

    async def wait(self) -> None:
        """Return once the file has been written to since the last call (or since watching began)."""
        await self._subscriber.written.wait()
        self._subscriber.written = anyio.Event()
