"""Pseudo-terminals for tasks that only behave on a terminal (REPLs, tools that colour or buffer).

The task gets the slave side as stdin, stdout and stderr; the server holds the
master side, copies what the task writes into the log (the only case where the
server is in the data path) and writes input into it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios

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


async def copy_output(master: int, log_fd: int) -> None:
    """Copy everything the task writes to its terminal into the log, until no process holds
    the terminal open any more. Closes ``log_fd``; the caller closes ``master``."""
    try:
        while True:
            await anyio.wait_readable(master)
            try:
                data = os.read(master, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the last process holding the slave side closed it
                return
            if not data:
                return
            os.write(log_fd, data)
    finally:
        with contextlib.suppress(OSError):
            os.close(log_fd)
