"""File events without inotify: the watched paths are looked at (a stat each) while watched.

The portable backend's answer to inotify, with the same small interface (add, remove,
changed, close): a path counts as changed when its inode, size or modification time
differs from the last look. Nothing is looked at while nothing is watched, so an idle
server with no waiter costs nothing; a wait sees a write within one interval.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

Signature = tuple[int, int, int] | None
"""(inode, size, modification time in ns) of a path, None while it does not exist."""


def signature(path: Path) -> Signature:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class PolledEvents:
    """Watches paths by looking at them every ``interval`` seconds while any is watched."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._watched: dict[int, tuple[Path, Signature]] = {}
        self._handles: dict[Path, int] = {}
        self._next_handle = 1
        self._added = anyio.Event()

    def add(self, path: Path, events: int = 0) -> int:
        """Watch ``path`` (any change counts, whatever ``events`` asks); the same path gives the same handle."""
        del events
        handle = self._handles.get(path)
        if handle is None:
            handle, self._next_handle = self._next_handle, self._next_handle + 1
            self._handles[path] = handle
            self._watched[handle] = (path, signature(path))
            self._added.set()
        return handle

    def remove(self, handle: int) -> None:
        watched = self._watched.pop(handle, None)
        if watched is not None:
            self._handles.pop(watched[0], None)

    async def changed(self) -> set[int]:
        """Wait until some watched path changes; return the handles of those that did."""
        while True:
            if not self._watched:
                await self._added.wait()
                self._added = anyio.Event()
                continue
            await anyio.sleep(self.interval)
            found = set()
            for handle, (path, seen) in list(self._watched.items()):
                now = signature(path)
                if now != seen:
                    self._watched[handle] = (path, now)
                    found.add(handle)
            if found:
                return found

    def close(self) -> None:
        self._watched.clear()
        self._handles.clear()
