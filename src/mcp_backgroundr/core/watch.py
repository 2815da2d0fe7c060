"""Wake-ups for waiters: a log file growing (inotify), a line matching, a port accepting.

Nothing here runs unless somebody waits: a log is watched (through the server's one
inotify instance) only for the duration of a wait, and a port is probed only while a
wait asks for one. Reading and matching a log runs in worker threads, in bounded steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from .. import offload
from ..logs import matching
from ..logs.grep import LineMatch, scan_lines
from ..logs.lines import CHUNK
from ..logs.patterns import ClientPattern, Pattern
from ..models import WaitReason
from ..platform.inotify import WriteWatches
from .validation import WaitConditions

SCAN_STEP_BYTES = CHUNK
"""How much of a log one worker-thread step of a pattern wait reads."""
PORT_PROBE_INTERVAL = 0.05
PORT_CONNECT_TIMEOUT = 0.5
PORT_BUSY_MAX_INTERVAL = 1.0
PROGRESS_INTERVAL_SECONDS = 1.0
PARTIAL_LINE_QUIET_SECONDS = 0.5
"""An unterminated line that matches counts once nothing more was written for this long."""


class LineScanner:
    """Reads a log forward from an offset and matches each complete line against a pattern."""

    def __init__(self, path: Path, start: int, pattern: Pattern) -> None:
        self._path = path
        self._offset = start
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
            left = os.stat(self._path).st_size - self._offset
        except FileNotFoundError:
            return None, True
        if isinstance(self._pattern, ClientPattern) and matching.far(left):
            match, self._offset, caught_up = matching.MATCHERS.run(
                scan_lines, self._path, self._offset, self._pattern, limit
            )
        else:
            match, self._offset, caught_up = scan_lines(self._path, self._offset, self._pattern, limit)
        return match, caught_up


async def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on this port of localhost."""
    for host in ("127.0.0.1", "::1"):
        try:
            with anyio.fail_after(PORT_CONNECT_TIMEOUT):
                stream = await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError):
            continue
        await stream.aclose()
        return True
    return False


PortOwner = Callable[[int, float], Awaitable[bool]]
"""Whether the task listens on a port, by a look taken after a given monotonic time."""


async def until_port_accepts(port: int, owned: PortOwner) -> None:
    """Return once the port accepts connections and ``owned`` says the task is who listens.
    A port offers no wake-up, so it is probed, and only while somebody waits for it; while
    another program holds the port, the probes (and the socket-table reads that tell whose
    it is) slow down to one per PORT_BUSY_MAX_INTERVAL."""
    interval = PORT_PROBE_INTERVAL
    while True:
        probed_at = time.monotonic()
        if await port_accepts(port):
            if await owned(port, probed_at):
                return
            interval = min(interval * 2, PORT_BUSY_MAX_INTERVAL)
        await anyio.sleep(interval)


ProgressReporter = Callable[[float, float], Awaitable[None]]
"""Called with (seconds waited, seconds allowed) while a wait goes on."""


@dataclass
class WaitOutcome:
    reason: WaitReason = WaitReason.TIMEOUT
    match: LineMatch | None = None


async def first_event(
    watches: WriteWatches,
    exited: anyio.Event,
    path: Path,
    start: int,
    conditions: WaitConditions,
    owns_port: PortOwner,
    progress: ProgressReporter | None,
) -> WaitOutcome:
    """Wait for the first of: the exit, a matching line, the port accepting, the time limit."""
    outcome = WaitOutcome()
    pattern, port = conditions.pattern, conditions.port
    scanner = LineScanner(path, start, pattern) if pattern else None
    with anyio.move_on_after(conditions.timeout):
        async with anyio.create_task_group() as group:

            def finish(reason: WaitReason, match: LineMatch | None = None) -> None:
                outcome.reason, outcome.match = reason, match
                group.cancel_scope.cancel()

            async def on_exit() -> None:
                await exited.wait()
                # A line written just before the exit still counts as a match.
                match = await scanner.scan() if scanner else None
                finish(WaitReason.PATTERN if match else WaitReason.EXITED, match)

            async def on_line(scanner: LineScanner) -> None:
                finish(WaitReason.PATTERN, await until_line(watches, path, scanner))

            async def on_port(port: int) -> None:
                await until_port_accepts(port, owns_port)
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
    """Scan the log as it grows until a line matches (an unterminated one once the log is quiet)."""
    with watches.watching(path) as growth:
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
