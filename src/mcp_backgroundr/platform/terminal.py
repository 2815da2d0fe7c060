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
import select
import struct
import termios
import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from .. import offload

COLUMNS = 120
ROWS = 40
READ_SIZE = 64 * 1024
STOP_LOOK_MS = 100
"""How often the copy looks whether it was told to stop, while the terminal is quiet."""
STOP_WAIT_SECONDS = 1.0
"""How long a cancelled caller waits for the copy to let go of the terminal."""


def open_terminal() -> tuple[int, int]:
    """A new pseudo-terminal: (master, slave), the master non-blocking."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    os.set_blocking(master, False)
    return master, slave


async def copy_output(master: int, log_fd: int, on_write_error: Callable[[OSError], None]) -> int:
    """Copy everything the task writes to its terminal into the log, until no process holds
    the terminal open any more. Closes ``log_fd``; the caller closes ``master`` once this returns.

    The copy runs in a thread of its own (``offload.TERMINALS``): it is as much work as the task
    writes (a `yes` on a terminal, every byte read and written again), and a write to the log may
    wait on the disk, so on the event loop it delayed every other call. If the caller is
    cancelled, the thread is told to stop and waited for, so ``master`` is never closed under it.

    A write the log does not take (a full disk, a quota) is passed to ``on_write_error`` (on the
    event loop) the first time; the terminal is still drained, so the task never blocks on it,
    and each later chunk is tried again (the disk may free up). Returns how many bytes never
    reached the log.
    """
    token = anyio.lowlevel.current_token()

    def report(error: OSError) -> None:
        anyio.from_thread.run_sync(on_write_error, error, token=token)

    stop, done = threading.Event(), threading.Event()
    try:
        return await offload.run(offload.TERMINALS, _copy, master, log_fd, report, stop, done, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        stop.set()
        with anyio.CancelScope(shield=True):  # (bounded: a copy cancelled before it began never sets it)
            await anyio.to_thread.run_sync(done.wait, STOP_WAIT_SECONDS)
        raise


def _copy(
    master: int, log_fd: int, on_write_error: Callable[[OSError], None], stop: threading.Event, done: threading.Event
) -> int:
    lost = 0
    waiting = select.poll()
    waiting.register(master, select.POLLIN)
    try:
        while not stop.is_set():
            if not waiting.poll(STOP_LOOK_MS):
                continue
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
        return lost
    finally:
        with contextlib.suppress(OSError):
            os.close(log_fd)
        done.set()  # a cancelled caller waits for this: the master is no longer read


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
