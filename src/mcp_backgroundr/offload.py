"""Work the event loop must not wait on, run in worker threads, a bounded number at a time.

Anything whose cost grows with a log's size, the number of processes, a writer's speed or
the disk's latency runs here, so one client's slow call never delays another's answer.
Each kind of work has its own lane (a capacity limiter per event loop), so a pile-up of one
kind (hundreds of greps on big logs, hole punches on a disk that discards synchronously)
cannot take the threads every other call needs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


BACKGROUND_NICENESS = 10
"""How much lower than the event loop's the CPU priority of background lanes' threads is."""


def _lower_priority(niceness: int) -> None:
    """Lower this thread's CPU priority (Linux: each thread has its own nice value)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class Lane:
    """One kind of blocking work, with at most ``threads`` of it running at once.

    A lane with a ``niceness`` runs in threads of its own below the event loop's CPU priority:
    work that may keep a CPU busy for long (a writer's pacing, matching a big log) then never
    takes the CPU the event loop needs to answer others. (anyio's worker threads serve every
    kind of call, and a thread's priority, once lowered, cannot be raised again.)
    """

    def __init__(self, name: str, threads: int, niceness: int = 0) -> None:
        self.name = name
        self.threads = threads
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"mcp_backgroundr.offload.{name}")
        self.executor = (
            concurrent.futures.ThreadPoolExecutor(
                threads, thread_name_prefix=name, initializer=functools.partial(_lower_priority, niceness)
            )
            if niceness
            else None
        )

    def limiter(self) -> anyio.CapacityLimiter:
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.threads)
            self._limiter.set(limiter)
            return limiter


LOGS = Lane("logs", 4)
"""Reading a bounded slice of a log (status, wait answers)."""
MATCHING = Lane("matching", 4, BACKGROUND_NICENESS)
"""Matching logs (grep, pattern waits from a cursor), in bounded steps: as long as the log is big. A
step with much of the log ahead is handed to a matching process (logs/matching.py) and waited for
here; its processes are started from these threads, which live as long as the server (the
processes die with the thread that started them: ``PR_SET_PDEATHSIG``)."""
PACING = Lane("pacing", 1000, BACKGROUND_NICENESS)
"""Keeping logs being written under their caps, in the capping process (logs/capping.py), out of the
server's interpreter: one thread per log while it is written (a hole
punch may wait on the device; a writer as fast as `yes` under a small cap needs hundreds of looks
and punches a second); the bound is far above the tasks a server runs at once."""
TERMINALS = Lane("terminals", 1000, BACKGROUND_NICENESS)
"""Copying a terminal task's output into its log: one thread per such task, for its whole life
(as much work as the task writes, and a write may wait on the disk); the bound is far above the
tasks a server runs at once."""
MESSAGES = Lane("messages", 2, BACKGROUND_NICENESS)
"""Weighing a long message before it is parsed (tools/weighing.py): as long as the message."""
SCANS = Lane("scans", 4)
"""Process and socket tables of the machine."""
REGISTRY = Lane("registry", 8)
"""Registry calls that may wait: writes (queued in the registry's own thread, each waiting up to
the busy timeout for another process's lock), whole-registry reads, pruning. The threads mostly
wait, so a few writes held up by a lock leave room for the calls behind them."""
CGROUPS = Lane("cgroups", 4)
"""Making, reading and removing tasks' cgroups (the kernel may wait for an RCU grace period)."""


async def run(lane: Lane, function: Callable[[*_Args], _T], *args: *_Args, abandon_on_cancel: bool = False) -> _T:
    """``function(*args)`` in a worker thread of ``lane``; the caller waits, the event loop does not.

    With ``abandon_on_cancel`` a cancelled caller stops waiting while the work goes on."""
    if lane.executor is None:
        return await anyio.to_thread.run_sync(
            function, *args, limiter=lane.limiter(), abandon_on_cancel=abandon_on_cancel
        )
    work = lane.executor.submit(function, *args)
    try:
        return await anyio.to_thread.run_sync(work.result, abandon_on_cancel=abandon_on_cancel, limiter=lane.limiter())
    finally:
        work.cancel()  # dropped if it never began (its caller was cancelled while it was queued)


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
