"""Wake-ups for waiters: a log file growing (inotify), a line matching, a task listening on a port.

Nothing here runs unless somebody waits: a log is watched (through the server's one
inotify instance) only for the duration of a wait, and a port's listeners are looked for
(in the socket table) only while a wait asks for one. Reading and matching a log runs in
worker threads, in bounded steps.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from .. import offload
from ..logs import matching
from ..logs.grep import LineMatch, scan_lines, start_of_line
from ..logs.lines import CHUNK
from ..logs.patterns import ClientPattern, Pattern
from ..models import WaitReason
from ..platform.inotify import WriteWatches
from ..platform.scans import PortHolder, PortLook
from .validation import WaitConditions

SCAN_STEP_BYTES = CHUNK
"""How much of a log one worker-thread step of a pattern wait reads."""
PORT_PROBE_INTERVAL = 0.05
PORT_BUSY_MAX_INTERVAL = 1.0
PORT_LOOK_SHARE = 4.0
"""A wait for a port pauses at least this many times as long as its last look at the socket table took."""
PROGRESS_INTERVAL_SECONDS = 1.0
PARTIAL_LINE_QUIET_SECONDS = 0.5
"""An unterminated line that matches counts once nothing more was written for this long."""


class LineScanner:
    """Reads a log forward from an offset and matches each complete line against a pattern."""

    def __init__(self, path: Path, start: int, pattern: Pattern) -> None:
        self._path = path
        self._boundary = start
        """Where the wait began: a line begun before it matches by what was written after it."""
        self._offset: int | None = None
        """Where the next step reads from: at first, the start of the line under way at ``start``."""
        self._pattern = pattern
        self._lock = anyio.Lock()

    async def scan(self) -> LineMatch | None:
        """The first line written since the last scan that matches, if any: read in worker
        threads, SCAN_STEP_BYTES at a time, so a wait from cursor 0 of a huge log blocks nobody."""
        async with self._lock:
            while True:
                match, caught_up = await offload.run(offload.MATCHING, self.scan_step, SCAN_STEP_BYTES)
                if match or caught_up:
                    return match

    def scan_step(self, limit: int) -> tuple[LineMatch | None, bool]:
        """One step of :func:`grep.scan_lines` from where the last one stopped; in a matching
        process (out of the server's interpreter lock) while much of the log is left."""
        try:
            if self._offset is None:
                self._offset = start_of_line(self._path, self._boundary)
            left = os.stat(self._path).st_size - self._offset
        except FileNotFoundError:
            return None, True
        step = (self._path, self._offset, self._pattern, limit, self._boundary)
        if isinstance(self._pattern, ClientPattern) and matching.far(left):
            match, self._offset, caught_up = matching.MATCHERS.run(scan_lines, *step)
        else:
            match, self._offset, caught_up = scan_lines(*step)
        return match, caught_up


PortHolders = Callable[[int, float], Awaitable[PortLook]]
"""Who listens on a port, by a read of the socket table taken after a given monotonic time."""


async def until_task_listens(port: int, holders: PortHolders, seen: WaitOutcome) -> None:
    """Return once a process of the task listens on the port (on any address: a wildcard, a
    non-loopback or an IPv6 one). The socket table is read, never the port connected to: a server
    that serves one client took the probe for its client and was gone before the real one came.
    A port offers no wake-up, so it is looked at, and only while somebody waits for it; while
    another program holds the port, the looks slow down to one per PORT_BUSY_MAX_INTERVAL.
    The last look is kept in ``seen`` (a timeout says why)."""
    interval = PORT_PROBE_INTERVAL
    while True:
        began = time.monotonic()
        seen.port_look = look = await holders(port, began)
        if look.holder is PortHolder.TASK:
            return
        if look.holder is PortHolder.OTHER:
            interval = min(interval * 2, PORT_BUSY_MAX_INTERVAL)
        # Where a look is costly (the portable backend reads every process), it takes a bounded share.
        await anyio.sleep(max(interval, PORT_LOOK_SHARE * (time.monotonic() - began)))


def port_timeout_advice(port: int, look: PortLook | None, where: str = "this server can see") -> str | None:
    """Why a wait for ``port`` timed out, from the last look at who listens on it (``where``: what
    that look saw, for "nothing ... listens")."""
    if look is None:
        return None
    if look.holder is PortHolder.OTHER:
        pids = ", ".join(str(pid) for pid in look.others)
        who = f"pid {pids}" if pids else "whose pid cannot be read: another user's"
        return (
            f"port {port} is held by another program ({who}), not by this task: it may have failed to bind it "
            "(see its output) or listen on another port"
        )
    if look.whole_machine:
        return (
            f"nothing {where} listens on port {port} (on any address): the task has not opened it "
            "yet, or uses another port"
        )
    return (
        f"no process of this task listens on port {port} (on any address); on this platform backend only the "
        "task's own processes' sockets can be read, so whether another program holds the port is not known"
    )


Lingering = Callable[[], Awaitable[None]]
"""Returns once no process the task left running after its exit is left."""
ProgressReporter = Callable[[float, float], Awaitable[None]]
"""Called with (seconds waited, seconds allowed) while a wait goes on."""


@dataclass
class WaitOutcome:
    reason: WaitReason = WaitReason.TIMEOUT
    match: LineMatch | None = None
    port_look: PortLook | None = None
    """The last look at who listens on the waited-for port."""


async def first_event(
    watches: WriteWatches,
    exited: anyio.Event,
    path: Path,
    start: int,
    conditions: WaitConditions,
    port_holders: PortHolders,
    lingering: Lingering,
    progress: ProgressReporter | None,
) -> WaitOutcome:
    """Wait for the first of: the exit, a matching line, the task listening on the port, the time
    limit. With a port, the exit is that of the task and of every process it left running: a
    server started with ``&`` outlives the shell that started it."""
    outcome = WaitOutcome()
    pattern, port = conditions.pattern, conditions.port
    if not pattern and port is None and progress is None:
        # Only the exit or the time ends it: awaited here, without a task group and a task for the
        # exit, whose objects every garbage collection walks while the wait is pending.
        with anyio.move_on_after(conditions.timeout):
            await exited.wait()
            outcome.reason = WaitReason.EXITED
        return outcome
    scanner = LineScanner(path, start, pattern) if pattern else None
    with anyio.move_on_after(conditions.timeout):
        async with anyio.create_task_group() as group:

            def finish(reason: WaitReason, match: LineMatch | None = None) -> None:
                outcome.reason, outcome.match = reason, match
                group.cancel_scope.cancel()

            async def on_exit() -> None:
                await exited.wait()
                if port is not None:
                    await lingering()
                # A line written just before the exit still counts as a match.
                match = await scanner.scan() if scanner else None
                finish(WaitReason.PATTERN if match else WaitReason.EXITED, match)

            async def on_line(scanner: LineScanner) -> None:
                finish(WaitReason.PATTERN, await until_line(watches, path, scanner))

            async def on_port(port: int) -> None:
                await until_task_listens(port, port_holders, outcome)
                finish(WaitReason.PORT)

            group.start_soon(on_exit)
            if scanner:
                group.start_soon(on_line, scanner)
            if port is not None:
                group.start_soon(on_port, port)
            if progress:
                group.start_soon(report_progress, progress, conditions.timeout)
    return outcome


async def until_line(watches: WriteWatches, path: Path, scanner: LineScanner) -> LineMatch | None:
    """Scan the log as it grows until a line matches (an unterminated one once the log is quiet).
    A log deleted before it is watched matches nothing from then on: the exit, a port or the time
    ends the wait (its answer says the log is gone)."""
    with contextlib.ExitStack() as stack:
        try:
            growth = stack.enter_context(watches.watching(path))
        except FileNotFoundError:
            await anyio.sleep_forever()
            raise  # (never: only a cancellation ends the sleep)
        while True:
            match = await scanner.scan()
            if match and match.complete:
                return match
            if match:
                # An unterminated line matched: a prompt waits for input, a line
                # still being written goes on. Only a quiet moment tells them apart.
                with anyio.move_on_after(PARTIAL_LINE_QUIET_SECONDS) as quiet:
                    await growth.wait()
                if quiet.cancelled_caught:
                    return match
            else:
                await growth.wait()


async def report_progress(progress: ProgressReporter, limit_seconds: float) -> None:
    """Until cancelled: tell the client every PROGRESS_INTERVAL_SECONDS how long the wait has run."""
    began = time.monotonic()
    while True:
        await progress(round(time.monotonic() - began, 1), limit_seconds)
        await anyio.sleep(PROGRESS_INTERVAL_SECONDS)
