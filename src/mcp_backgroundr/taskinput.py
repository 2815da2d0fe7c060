"""Writing to a task's stdin pipe or terminal without ever blocking the server."""

from __future__ import annotations

import os

import anyio

from .errors import BackgroundrError

INPUT_WRITE_SECONDS = 5.0
"""How long a write may wait for a task that does not read its input."""


async def write_all(fd: int, data: bytes, within_seconds: float = INPUT_WRITE_SECONDS) -> int:
    """Write all of ``data`` to a non-blocking descriptor; return the byte count.

    Raises:
        BackgroundrError: the task closed its input, or did not read it in time.
    """
    written = 0
    with anyio.move_on_after(within_seconds):
        while written < len(data):
            try:
                written += os.write(fd, data[written:])
            except BlockingIOError:
                await anyio.wait_writable(fd)
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
