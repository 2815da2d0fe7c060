"""Work the event loop must not wait on, run in worker threads, a bounded number at a time.

Anything whose cost grows with a log's size, the number of processes, a writer's speed or
the disk's latency runs here, so one client's slow call never delays another's answer.
Each kind of work has its own lane (a capacity limiter per event loop), so a pile-up of one
kind (hundreds of greps on big logs, hole punches on a disk that discards synchronously)
cannot take the threads every other call needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


class Lane:
    """One kind of blocking work, with at most ``threads`` of it running at once."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"mcp_backgroundr.offload.{name}")

    def limiter(self) -> anyio.CapacityLimiter:
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.threads)
            self._limiter.set(limiter)
            return limiter


LOGS = Lane("logs", 4)
"""Reading and matching logs (grep, pattern waits from a cursor): bounded steps each."""
CAPS = Lane("caps", 4)
"""Dropping old output of logs over their cap (a hole punch may wait on the device)."""
SCANS = Lane("scans", 4)
"""Process and socket tables of the machine."""
REGISTRY = Lane("registry", 2)
"""SQLite calls, which may wait up to the busy timeout for another writer."""


async def run(lane: Lane, function: Callable[[*_Args], _T], *args: *_Args) -> _T:
    """``function(*args)`` in a worker thread of ``lane``; the caller waits, the event loop does not."""
    return await anyio.to_thread.run_sync(function, *args, limiter=lane.limiter())
