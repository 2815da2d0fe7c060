"""Work the event loop must not wait on, run in worker threads, a bounded number at a time.

Anything whose cost grows with a log's size, the number of processes, a writer's speed or
the disk's latency runs here, so one client's slow call never delays another's answer.
Each kind of work has its own lane (a capacity limiter per event loop), so a pile-up of one
kind (hundreds of greps on big logs, hole punches on a disk that discards synchronously)
cannot take the threads every other call needs.
"""

from __future__ import annotations

import sys
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
PACING = Lane("pacing", 1000)
"""Keeping logs being written under their caps: one thread per log while it is written (a hole
punch may wait on the device); the bound is far above the tasks a server runs at once."""
SCANS = Lane("scans", 4)
"""Process and socket tables of the machine."""
REGISTRY = Lane("registry", 8)
"""Registry calls that may wait: writes (queued in the registry's own thread, each waiting up to
the busy timeout for another process's lock), whole-registry reads, pruning. The threads mostly
wait, so a few writes held up by a lock leave room for the calls behind them."""
CGROUPS = Lane("cgroups", 4)
"""Making, reading and removing tasks' cgroups (the kernel may wait for an RCU grace period)."""


async def run(lane: Lane, function: Callable[[*_Args], _T], *args: *_Args) -> _T:
    """``function(*args)`` in a worker thread of ``lane``; the caller waits, the event loop does not."""
    return await anyio.to_thread.run_sync(function, *args, limiter=lane.limiter())


SWITCH_INTERVAL_SECONDS = 0.0005
"""How long a thread running Python code may keep the interpreter lock once another asks for it."""


def favour_the_event_loop() -> None:
    """Hand the interpreter lock back to the event loop sooner.

    A worker thread running Python code (matching log lines) keeps the lock for up to the
    switch interval, 5 ms by default, each time the event loop asks for it back, and the loop
    asks for it at every system call of an answer: dozens of times, so a busy worker turned a
    2 ms answer into hundreds of ms. At 0.5 ms the worker loses a little throughput, the loop
    none.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
