"""Dropping the oldest output of a log past its cap, by making a hole at its head.

The file keeps its size, so every byte offset, and so every cursor, keeps its meaning,
while the dropped bytes no longer take disk space. How the hole is made is the platform's
(``platform/heads.py``: fallocate PUNCH_HOLE on Linux, F_PUNCHHOLE on macOS, a rewrite
elsewhere), handed in as ``drop``. Where the kept output starts is read back from the file
itself (lseek SEEK_DATA).

Standard library only: the runner of a task that outlives its server (``python -I
runner.py``) loads this file too, and keeps the task's log capped with :func:`keep_capped`
while no server runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

BLOCK = 4096
KEPT_FRACTION = 4
MAX_PAUSE_SECONDS = 0.25
"""Longest pause between two looks at a log being written."""
BURST_BYTES_PER_SECOND = 256 * 1024 * 1024
"""The rate a writer is assumed able to reach at any moment, however slowly it wrote so far.

A writer's past rate says little about its next: a shell that prints a line and then runs `yes`
(about 1 GB/s here) went from a few bytes in a few milliseconds to full speed, and a pause paced
on the first rate let it write some 600 MB past a 1 MiB cap. Pacing on at least this rate
bounds what a burst gets past the room left under the cap to that room times its speed over this
one (1 GB/s: 4 times), at the price of a look every few milliseconds at a small-capped log
written slowly (a stat: docs/benchmarks.md, 8)."""
RATE_MEMORY = 0.9
ROOM_USED_PER_PAUSE = 0.5
"""The share of the room left under the cap a writer may fill, at its fastest, before the next
look: the rest is for what it writes while the look waits for a CPU and the punch for the disk."""
QUIET_SECONDS = 0.2
"""A log that did not grow for this long goes back to inotify."""
MIN_PAUSE_SECONDS = 0.0002
"""The shortest pause between two looks, so that a pacing thread never spins."""
QUIET_LOOK_SECONDS = MAX_PAUSE_SECONDS
"""How often the runner looks at a quiet log (a stat): a writer that starts again gets at most
this long ahead of its cap."""
RETRY_SECONDS = (1.0, 30.0)
"""After a failure to drop a log's head (a full disk stops a rewrite; an append-only log takes
no hole), capping it is tried again after the first figure, doubled at each failure up to the
second: a log left uncapped at its first failure grew without end."""
READ_ATTEMPTS = 4
"""Reads of a log whose every byte read was dropped meanwhile, before answering none."""
Dropper = Callable[[str, int, int], None]
"""Makes bytes [start, end) of the log at a path a hole (see platform/heads.py)."""


def dropped_bytes(path: Path) -> int:
    """How many bytes at the head of a log were dropped (where its kept output starts)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return kept_start(fd)
    finally:
        os.close(fd)


def kept_start(fd: int) -> int:
    """Where the kept output of the open log ``fd`` starts (how many bytes were dropped).

    That is the first data after the hole at the head. A head dropped by rewriting the log
    (platform/heads.py, without hole punching) may hold a few stray bytes before the hole,
    already copied to the end: data, then a hole, then data means the kept output is the last.
    """
    size = os.fstat(fd).st_size  # before looking for a hole: the end of a growing log is not one
    first = _data_from(fd, 0)
    if first >= size:
        return first
    try:
        hole = os.lseek(fd, first, os.SEEK_HOLE)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # cut short meanwhile (a rewrite under way elsewhere)
            return first
        raise
    return first if hole >= size else _data_from(fd, hole)


def _data_from(fd: int, offset: int) -> int:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data from there: empty, or everything dropped
            return os.fstat(fd).st_size
        raise


def read_kept(fd: int, length: int, offset: int) -> tuple[bytes, int, int]:
    """Up to ``length`` bytes of the open log ``fd`` from ``offset``, or from where its kept
    output starts if that is later, without any byte that was dropped.

    The cap may punch its hole while the read runs: bytes found kept before the read may be
    read as the hole's zeros. So the kept start is looked at again once the bytes are read,
    and whatever is now before it is left out; when that is all of it, the read is made again
    (up to READ_ATTEMPTS times) from where the kept output starts now. Returns the bytes, the offset they start at,
    and where the kept output starts.
    """
    data, kept = b"", offset
    for _ in range(READ_ATTEMPTS):
        offset = max(offset, kept_start(fd))
        data = os.pread(fd, length, offset)
        kept = kept_start(fd)
        if kept <= offset:
            return data, offset, kept
        if kept < offset + len(data):
            return data[kept - offset :], kept, kept
        offset = kept  # all of it was dropped meanwhile: read again from what is kept now
    return b"", max(offset, kept), kept


def enforce(path: Path, cap: int, drop: Dropper) -> tuple[int, int]:
    """If a log takes more than ``cap`` bytes of disk, drop its oldest output down to a quarter
    of the cap, which leaves a fast writer room before the next look.

    Returns the log's size and the disk it takes now.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return 0, 0
    allocated = info.st_blocks * 512
    if allocated <= cap:
        return info.st_size, allocated
    start = dropped_bytes(path)
    end = (info.st_size - cap // KEPT_FRACTION) // BLOCK * BLOCK
    if end <= start:
        return info.st_size, allocated
    drop(str(path), start, end)
    return info.st_size, max(0, allocated - (end - start))


def enforce_all(logs: Iterable[tuple[Path, int]], drop: Dropper) -> int:
    """Bring every (log, cap) under its cap (a server starting: logs may have grown while no
    server ran); a log that cannot be capped is left as it is. Returns how many were over."""
    over = 0
    for path, cap in logs:
        with contextlib.suppress(OSError):
            info = path.stat()
            if info.st_blocks * 512 > cap:
                enforce(path, cap, drop)
                over += 1
                # A drop is no output: the log's last write stays the last sign of life of a task
                # that ended while no server watched it (store/orphans.py). A write meanwhile is
                # left a moment older than it is, never newer.
                os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    return over


class Pace:
    """How long to wait before looking at a log being written again: long enough to be cheap,
    short enough that the writer cannot fill the room left under the cap meanwhile."""

    def __init__(self, size: int) -> None:
        self.fastest = 0.0
        """The fastest recent write rate, in bytes per second, fading slowly."""
        self.restart(size)

    def restart(self, size: int) -> None:
        """Measure the writer from now on (not since it was last quiet); its speed is remembered,
        but the pauses start short again (see ``longest``)."""
        self.last_size, self.last_look = size, time.monotonic()
        self.longest = MIN_PAUSE_SECONDS
        """The longest pause allowed now: it doubles at each look that finds the log grown, up to
        MAX_PAUSE_SECONDS. A writer that starts (or resumes after a quiet spell) is looked at
        within a fraction of a millisecond, and so measured at its real rate before any pause long
        enough for it to write far past its cap (a first pause paced on an assumed rate let `yes`
        write 3.5 to 5.8 times a 64 MiB cap: a new-user trial)."""

    def next_pause(self, cap: int, size: int, allocated: int) -> float | None:
        """Seconds to wait before the next look (at least MIN_PAUSE_SECONDS), or None once the
        log is quiet."""
        now = time.monotonic()
        grew = size > self.last_size
        longest = self.longest
        if grew:
            rate = (size - self.last_size) / max(now - self.last_look, 1e-6)
            self.fastest = max(rate, self.fastest * RATE_MEMORY)
            self.last_size, self.last_look = size, now
            self.longest = min(2 * longest, MAX_PAUSE_SECONDS)
        elif now - self.last_look >= QUIET_SECONDS:
            return None
        room = max(0.0, cap - allocated) * ROOM_USED_PER_PAUSE
        pause = min(room / max(self.fastest, BURST_BYTES_PER_SECOND), longest)
        if not grew:  # it paused: look again soon, as fast as it might resume
            pause = min(max(pause, MIN_PAUSE_SECONDS), self.last_look + QUIET_SECONDS - now)
        return max(pause, MIN_PAUSE_SECONDS)


class Retries:
    """When to try capping a log again after a failure (see RETRY_SECONDS), and whether a failure is
    news: each cause is said once, until capping works again."""

    def __init__(self) -> None:
        self.pause, self.said = RETRY_SECONDS[0], ""

    def failed(self, error: OSError) -> tuple[str | None, float]:
        """The cause to say (None: said already), and how long to wait before the next try."""
        cause = str(error.strerror or error)
        news, self.said = (cause if cause != self.said else None), cause
        pause, self.pause = self.pause, min(2 * self.pause, RETRY_SECONDS[1])
        return news, pause

    def worked(self) -> None:
        self.pause, self.said = RETRY_SECONDS[0], ""


def keep_capped(path: Path, cap: int, stopping: threading.Event, drop: Dropper, retries: Retries) -> None:
    """Keep a log under ``cap`` until ``stopping`` is set (in a daemon thread of the runner),
    paced by :class:`Pace` while the log is written, and looked at every QUIET_LOOK_SECONDS
    while it is quiet. It takes no inotify instance: those are few per user (128 by default)
    and a server needs its own, however many tasks outlive it. Raises OSError when a head
    cannot be dropped (``retries`` is told of each look that worked)."""
    pace = Pace(0)
    while not stopping.is_set():
        size, allocated = enforce(path, cap, drop)
        retries.worked()
        pause = pace.next_pause(cap, size, allocated)
        stopping.wait(QUIET_LOOK_SECONDS if pause is None else pause)
