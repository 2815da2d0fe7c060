"""Search a task's log: matching lines with their line numbers, within the answer budget."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import anyio

from .. import offload
from . import matching
from .files import dropped_bytes, matched_part
from .lines import CHUNK, LineReader, line_start, new_match
from .matches import GrepCollector
from .patterns import ClientPattern, Pattern, line_prefilter

STEP_BYTES = CHUNK
"""How much of a log one worker-thread step reads."""


@dataclass(frozen=True)
class Shown:
    """Which matching lines a grep shows: the first that fit in ``budget`` bytes, or the last
    ``last`` of them that fit; with their ANSI sequences when ``raw``."""

    budget: int
    last: int | None = None
    raw: bool = False

    @classmethod
    def of(cls, shown: Shown | int) -> Shown:
        """``shown``, or the first matching lines that fit in a budget of ``shown`` bytes."""
        return shown if isinstance(shown, Shown) else cls(shown)


@dataclass(frozen=True)
class GrepResult:
    text: str
    """Matching lines, each as ``NUMBER: text``."""
    matches: int
    """How many lines matched in the whole range, shown or not."""
    shown: int
    cursor: int
    size: int
    resume_at: int | None
    """Byte offset of the first matching line not shown, if any."""
    dropped: int = 0
    """Bytes dropped at the head of the log (size cap): line numbers count from there."""
    gone: bool = False
    """The log file is gone (deleted outside the server)."""
    last: int | None = None
    """How many of the last matching lines were asked for, if that was asked."""


class _Search:
    """A search through a log that goes on from where it stopped, a bounded amount at a time."""

    def __init__(self, fd: int, path: Path, pattern: Pattern, since: int, shown: Shown) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.dropped = dropped_bytes(path)
        self.since = min(max(since, self.dropped), self.size)
        self.pattern = pattern
        self.found = GrepCollector(pattern.search, shown.budget, shown.last, shown.raw)
        self.counted = self.dropped
        """Lines before ``since`` are counted up to here."""
        self.number = 1
        """The number of the line at ``since``, once counted."""
        self.lines = LineReader(fd, self.since, self.size, line_prefilter(pattern))
        self.done = False

    def step(self, limit: int) -> None:
        """Go on for about ``limit`` bytes of the log."""
        while limit > 0 and self.counted < self.since:
            chunk = os.pread(self.fd, min(CHUNK, self.since - self.counted), self.counted)
            if not chunk:
                self.counted = self.since
                break
            self.number += chunk.count(b"\n")
            self.counted += len(chunk)
            limit -= len(chunk)
        if self.counted < self.since:
            return
        end = self.lines.offset
        for line in self.lines.read(limit):
            self.found.offer(line, self.number + line.index)
            end = line.end
        if self.lines.caught_up:
            self.done, self.size = True, max(end, self.lines.offset)

    def step_here_or_far(self, path: Path, limit: int) -> None:
        """:meth:`step`, in a matching process when much of the log is left (blocking)."""
        left = self.size - min(self.counted, self.lines.offset)
        if not (isinstance(self.pattern, ClientPattern) and matching.far(left)):
            self.step(limit)
            return
        moved = matching.MATCHERS.run(_step_far, self, path, limit)
        fd = self.fd
        self.__dict__.update(moved.__dict__)
        self.fd = self.lines.fd = fd
        self.lines.prefilter = line_prefilter(self.pattern)

    def __getstate__(self) -> dict[str, object]:
        """What a matching process needs to go on (no descriptor: it opens the log itself)."""
        lines = copy.copy(self.lines)
        lines.fd, lines.prefilter = -1, None
        return dict(self.__dict__, fd=-1, lines=lines)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.lines.prefilter = line_prefilter(self.pattern)

    def result(self) -> GrepResult:
        found = self.found
        text = "\n".join(found.kept)
        return GrepResult(
            text, found.matches, len(found.kept), self.size, self.size, found.resume_at, self.dropped, last=found.last
        )


def _step_far(search: _Search, path: Path, limit: int) -> _Search:
    """A step of ``search``, in a matching process: answers the search as it is after it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # removed meanwhile: what was found so far is the answer
        search.done = True
        return search
    search.fd = search.lines.fd = fd
    try:
        search.step(limit)
    finally:
        os.close(fd)
    return search


@dataclass(frozen=True)
class LineMatch:
    line: str
    cursor: int
    """Byte offset just after the matching line."""
    complete: bool = True
    """False for the unterminated last line, which may still grow."""


def scan_lines(
    path: Path, offset: int, pattern: Pattern, limit: int, boundary: int = 0
) -> tuple[LineMatch | None, int, bool]:
    """The first line of the log from ``offset`` that matches (a wait's scan), the unterminated
    last one included (a prompt has no newline), reading at most about ``limit`` bytes; a line
    longer than the read chunk is matched piece by piece. A line begun before ``boundary`` (where
    the wait began) matches only by what was written after it (see :func:`lines.new_match`).
    Answers the match, where the next scan starts, and whether this one reached the end of the
    log. Blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, offset, True
    try:
        reader = LineReader(fd, offset, prefilter=line_prefilter(pattern))
        for line in reader.read(limit):
            if found := new_match(line.raw, boundary - line.start, pattern.search):
                shown = matched_part(*found)
                if line.last:
                    return LineMatch(shown, line.end, complete=False), reader.offset, True
                return LineMatch(shown, line.end), reader.offset, False
        return None, reader.offset, reader.caught_up
    finally:
        os.close(fd)


def start_of_line(path: Path, offset: int) -> int:
    """Where the line holding ``offset`` of the log at ``path`` starts (see :func:`lines.line_start`).

    Raises:
        FileNotFoundError: the log is gone.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return line_start(fd, offset)
    finally:
        os.close(fd)


NOTHING = GrepResult("", 0, 0, 0, 0, None, gone=True)
"""The answer for a log that is gone."""


def _open_search(path: Path, pattern: Pattern, since: int, shown: Shown) -> _Search | None:
    """A search of the log at ``path`` (None: it is gone); its caller closes ``search.fd``. Blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _Search(fd, path, pattern, since, shown)
    except BaseException:
        os.close(fd)
        raise


def grep_log(path: Path, pattern: Pattern, since: int, shown: Shown | int) -> GrepResult:
    """Lines of the log from byte ``since`` on that match ``pattern``.

    Blocking (it may read the whole log): the server uses :func:`grep_log_in_thread`.
    """
    search = _open_search(path, pattern, since, Shown.of(shown))
    if search is None:
        return NOTHING
    try:
        while not search.done:
            search.step(STEP_BYTES)
        return search.result()
    finally:
        os.close(search.fd)


async def grep_log_in_thread(path: Path, pattern: Pattern, since: int, shown: Shown) -> GrepResult:
    """:func:`grep_log` in worker threads, STEP_BYTES at a time: the event loop never waits on it
    (nor on opening the log), and a cancelled call stops after the step under way. Steps far from
    the log's end are made in a matching process (logs/matching.py), out of the server's
    interpreter lock."""
    with anyio.CancelScope(shield=True):  # an open descriptor must be known, to be closed
        search = await offload.run(offload.MATCHING, _open_search, path, pattern, since, shown)
    if search is None:
        return NOTHING
    try:
        while not search.done:
            await offload.run(offload.MATCHING, search.step_here_or_far, path, STEP_BYTES)
        return search.result()
    finally:
        os.close(search.fd)
