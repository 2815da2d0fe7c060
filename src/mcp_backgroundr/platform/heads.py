"""Dropping the head of a log: its oldest bytes stop taking disk, and every offset keeps its meaning.

The file keeps its size; the dropped head becomes a hole, and readers find where the kept
output starts with ``lseek(SEEK_DATA)``. How the hole is made depends on the system, and the
platform backend names the method:

``punch``
    Linux: ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` frees the blocks in place, while the task
    goes on appending.
``fcntl``
    macOS: ``fcntl(F_PUNCHHOLE)`` does the same. Untested: CI has no Mac.
``rewrite``
    Any POSIX system with sparse files (and the portable backend on Linux): the kept tail is
    read, the file truncated to nothing, extended back to its size (a hole) and the tail
    written back at its own offset. The task appends meanwhile. What it wrote while the tail
    was read is read too; what it wrote in the instant the file was empty lands at offset 0,
    in the head, and is moved to the end (after output written just after it). What it wrote
    between the last read and the truncation (a system call apart) is lost: a writer as fast as
    ``yes`` loses a chunk now and then; a task writing lines, practically never. A reader at
    that instant may see the kept tail as zero bytes.

Standard library only: the runner of a task that outlives its server loads this file by its
path, and it is shipped to remote hosts.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import struct
import sys
from collections.abc import Callable

PUNCH = "punch"
FCNTL = "fcntl"
REWRITE = "rewrite"
METHODS = (PUNCH, FCNTL, REWRITE)
BLOCK = 4096
"""Holes are made in whole blocks: the kept output starts at a multiple of this."""
REWRITE_ROUNDS = 4
"""Rewrites that catch stray bytes in the head are repeated at most this often."""
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_F_PUNCHHOLE = 99
"""macOS <sys/fcntl.h>; Python's fcntl module does not name it."""
_FPUNCHHOLE = struct.Struct("=IIqq")
"""struct fpunchhole: flags, reserved, offset, length."""

Dropper = Callable[[str, int, int], None]
"""Drops bytes ``[start, end)`` of the file at a path (``start``: where its hole ends already)."""


def method_for(platform_name: str) -> str:
    """The method a platform backend uses: Linux punches; elsewhere macOS's fcntl, else rewrite."""
    if platform_name == "linux":
        return PUNCH
    return FCNTL if sys.platform == "darwin" else REWRITE


def dropper(method: str) -> Dropper:
    """The function that drops a head by ``method`` (one of METHODS)."""
    return {PUNCH: _punch, FCNTL: _fcntl_punch, REWRITE: _rewrite}[method]


@functools.cache
def _fallocate() -> Callable[..., int]:
    """libc's ``fallocate``, looked up once. A lookup (``dlopen``, a new ctypes function type) holds
    the interpreter lock for about 80 us, and a writer as fast as `yes` under a small cap has its log
    punched hundreds of times a second: ten such logs took a third of the lock the event loop needs
    (docs/benchmarks.md 15)."""
    function = ctypes.CDLL(None, use_errno=True).fallocate
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    function.restype = ctypes.c_int
    return function


def _punch(path: str, start: int, end: int) -> None:
    fallocate = _fallocate()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot drop old output of {path}: {os.strerror(error)}")
    finally:
        os.close(fd)


def _fcntl_punch(path: str, start: int, end: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, _F_PUNCHHOLE, _FPUNCHHOLE.pack(0, 0, start, end - start))
    finally:
        os.close(fd)


def data_start(fd: int, offset: int = 0) -> int:
    """Where the first data at or after ``offset`` lies (the size when there is none)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nothing but hole up to the end
            return os.fstat(fd).st_size
        raise


def _rewrite(path: str, start: int, end: int) -> None:
    """Make the head a hole: read the last ``size - end`` bytes (measured now, the writer goes on),
    truncate the file, extend it back to its size (a hole) and write them back in place."""
    del start  # truncating frees the whole head, whatever was dropped before
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        keep = max(0, os.fstat(fd).st_size - end)
        for _ in range(REWRITE_ROUNDS):
            size = os.fstat(fd).st_size
            cut = max(end, (size - keep) // BLOCK * BLOCK)
            tail = os.pread(fd, size - cut, cut)
            tail += _read_from(fd, cut + len(tail))  # what the writer added meanwhile
            _swap(fd, tail, cut)
            strays = _strays(fd, cut)
            if not strays:
                return
            _append(path, strays)
    finally:
        os.close(fd)


def _swap(fd: int, tail: bytes, cut: int) -> None:
    """Truncate the file, extend it back (a hole) and write ``tail`` at ``cut``, holding the
    interpreter lock throughout (ctypes.PyDLL): no other thread of this process (a server's
    readers) can see the file in between. Another process can; a writer appending in between
    lands at offset 0 (a stray, moved by the caller)."""
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.ftruncate.argtypes = [ctypes.c_int, ctypes.c_longlong]
    libc.pwrite.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_longlong]
    libc.pwrite.restype = ctypes.c_ssize_t
    if libc.ftruncate(fd, 0) != 0 or libc.ftruncate(fd, cut + len(tail)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    written = 0
    while written < len(tail):
        done = libc.pwrite(fd, tail[written:], len(tail) - written, cut + written)
        if done <= 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        written += done


def _read_from(fd: int, offset: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size - offset, offset) if size > offset else b""


def _strays(fd: int, end: int) -> bytes:
    """Bytes in the head, before ``end``: appended while the file was empty."""
    first = data_start(fd)
    if first >= end:
        return b""
    hole = os.lseek(fd, first, os.SEEK_HOLE)
    return os.pread(fd, min(hole, end) - first, first).rstrip(b"\0")


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
