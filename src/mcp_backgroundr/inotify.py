"""Linux inotify through ctypes: which watched files were written to, without polling.

The standard library has no inotify binding and psutil does not cover it; this is
the small part we need (IN_MODIFY on files).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path

import anyio

_IN_MODIFY = 0x00000002
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify instance watching files for writes."""

    def __init__(self) -> None:
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def add(self, path: Path) -> int:
        """Watch a file for writes; return its watch descriptor."""
        wd: int = _libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY)
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
