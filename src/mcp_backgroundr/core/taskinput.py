"""Writing to a task's stdin pipe, terminal or input home without ever blocking the server.

A keep_running task started with stdin reads its input from a FIFO in the state
directory (its input home) that its runner holds open, so the task never reads
end-of-input when its server exits, and any server or the CLI can write to it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio

from .. import offload
from ..errors import BackgroundrError
from ..models import TaskRecord
from ..platform import process
from ..runner import INPUT_CLOSE_SIGNAL

RUNNER_READY_SECONDS = 5.0
"""Longest a close waits for a just-started runner to be ready for the close signal."""
RUNNER_READY_POLL_SECONDS = 0.01
INPUT_WRITE_SECONDS = 5.0
"""How long a write may wait for a task that does not read its input."""


async def write_all(
    fd: int, data: bytes, within_seconds: float = INPUT_WRITE_SECONDS, closed: anyio.Event | None = None
) -> int:
    """Write all of ``data`` to a non-blocking descriptor; return the byte count, which is less than
    all of it only when ``closed`` was set while the write waited for room (the input was closed
    meanwhile: this write's copy of the descriptor must not hold it open).

    Raises:
        BackgroundrError: the task closed its input, or did not read it in time.
    """
    written, view = 0, memoryview(data)  # a slice of the view copies nothing: a slice of bytes copies what is left
    with anyio.move_on_after(within_seconds):
        while written < len(data):
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                if not await _room_or_closed(fd, closed):
                    return written
            except BrokenPipeError as exc:
                raise BackgroundrError(
                    f"the task closed its stdin after {written} of {len(data)} bytes; it takes no more input"
                ) from exc
    if written < len(data):
        raise BackgroundrError(
            f"the task is not reading its input: {written} of {len(data)} bytes were written in "
            f"{within_seconds:g}s; check its output, or end it"
        )
    return written


async def _room_or_closed(fd: int, closed: anyio.Event | None) -> bool:
    """Wait until ``fd`` takes more (True) or ``closed`` is set (False)."""
    if closed is None:
        await anyio.wait_writable(fd)
        return True
    async with anyio.create_task_group() as group:

        async def stop_when_closed() -> None:
            await closed.wait()
            group.cancel_scope.cancel()

        group.start_soon(stop_when_closed)
        await anyio.wait_writable(fd)
        group.cancel_scope.cancel()
    return not closed.is_set()


def make_input_home(record: TaskRecord) -> int:
    """Create a task's input home; return a descriptor to hand to its runner as stdin (read and
    write: the runner holds it open from its first instant, and keeps what was written before it ran)."""
    os.mkfifo(record.input_path, 0o600)
    return os.open(record.input_path, os.O_RDWR | os.O_NONBLOCK)


def has_input_home(record: TaskRecord) -> bool:
    return record.keep_running and Path(record.input_path).exists()


async def write_to_input_home(record: TaskRecord, data: bytes, closed: anyio.Event | None = None) -> int:
    """Write ``data`` to a task's input home, from any process; return the byte count (short when
    ``closed`` was set while the write waited for room: see :func:`write_all`)."""
    try:
        # With O_NONBLOCK, opening a FIFO never waits for its reader (ENXIO); looking its path up may wait on the disk.
        fd = await offload.run(offload.LOGS, os.open, record.input_path, os.O_WRONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise BackgroundrError(f"task {record.task_id}'s input was closed; it takes no more input") from exc
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader: its runner is gone
            raise BackgroundrError(f"task {record.task_id} has ended; it takes no more input") from exc
        raise BackgroundrError(f"could not open task {record.task_id}'s input: {exc.strerror}") from exc
    try:
        return await write_all(fd, data, closed=closed)
    finally:
        os.close(fd)


async def close_input_home(record: TaskRecord) -> None:
    """Have the task's runner close its input home, and see that it did: then the task reads
    end-of-input (its runner holds the only lasting write end).

    Raises:
        BackgroundrError: its runner is gone, or did not close it in time; the input may still be open.
    """
    # The runner takes the signal only once its handler is in place, which it is by the time it
    # has written its status file; before that the signal would end it. Just after a start there
    # is no event to wait on across processes: look briefly.
    with anyio.move_on_after(RUNNER_READY_SECONDS):
        while not await anyio.Path(record.run_record_path).exists():  # noqa: ASYNC110
            await anyio.sleep(RUNNER_READY_POLL_SECONDS)
    home = anyio.Path(record.input_path)
    if not await home.exists():
        return  # closed already: by its runner, once asked
    ended = BackgroundrError(f"task {record.task_id} has ended; its input could not be closed, nor does it matter")
    if record.pid is None or not await offload.run(
        offload.SCANS, process.same_process, record.pid, record.pid_create_time
    ):
        raise ended
    try:
        os.kill(record.pid, INPUT_CLOSE_SIGNAL)
    except ProcessLookupError:  # it ended (and was reaped) since the look
        raise ended from None
    # The runner removes the FIFO once it has closed its end: that is the close made.
    with anyio.move_on_after(RUNNER_READY_SECONDS):
        while await home.exists():  # noqa: ASYNC110
            await anyio.sleep(RUNNER_READY_POLL_SECONDS)
    if await home.exists():
        raise BackgroundrError(
            f"task {record.task_id}'s runner (pid {record.pid}) did not close its input within "
            f"{RUNNER_READY_SECONDS:g}s; its input is still open: try again, or end the task"
        )
