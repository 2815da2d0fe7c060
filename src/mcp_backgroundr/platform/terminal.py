"""Pseudo-terminals for tasks that only behave on a terminal (REPLs, tools that colour or buffer).

The task gets the slave side as stdin, stdout and stderr; the server holds the
master side, copies what the task writes into the log (the only case where the
server is in the data path) and writes input into it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import termios
from collections.abc import Callable

import anyio

COLUMNS = 120
ROWS = 40
READ_SIZE = 64 * 1024


def open_terminal() -> tuple[int, int]:
    """A new pseudo-terminal: (master, slave), the master non-blocking."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    os.set_blocking(master, False)
    return master, slave


async def copy_output(master: int, log_fd: int, on_write_error: Callable[[OSError], None]) -> int:
    """Copy everything the task writes to its terminal into the log, until no process holds
    the terminal open any more. Closes ``log_fd``; the caller closes ``master``.

    A write the log does not take (a full disk, a quota) is passed to ``on_write_error`` the
    first time; the terminal is still drained, so the task never blocks on it, and each later
    chunk is tried again (the disk may free up). Returns how many bytes never reached the log.
    """
    lost = 0
    try:
        while True:
            await anyio.wait_readable(master)
            try:
                data = os.read(master, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the last process holding the slave side closed it
                return lost
            if not data:
                return lost
            unwritten, error = write_all(log_fd, data)
            if error is not None and not lost:
                on_write_error(error)
            lost += unwritten
    finally:
        with contextlib.suppress(OSError):
            os.close(log_fd)


def write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write all of ``data`` to a blocking file, going on after short writes; answer how many
    bytes could not be written, and why."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as exc:
            return len(view), exc
        if not written:
            return len(view), OSError(errno.EIO, "the log took no more bytes")
        view = view[written:]
    return 0, None
