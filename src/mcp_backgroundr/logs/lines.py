"""Reading a log forward line by line, a bounded number of bytes at a time.

Both ways of looking through a log for lines — grep, and a wait for a matching line — read it
here: in chunks (so a worker-thread step stays bounded), only what is kept (output dropped under
the size cap is skipped, even when it is dropped during the read), and a line longer than a chunk
in pieces (a 50 MB line without a newline never sits in memory whole), each ending where a
carriage return starts an update of a progress bar, if one does.

Given a prefilter (:func:`patterns.line_prefilter`), a reader gives out only the lines of a
chunk that may match: a block of whole lines whose bytes show as they are (no control bytes, no
escape sequences, ASCII) is searched in one call, and the lines in between are passed over,
counted but never decoded. Matching 50 MB line by line in Python takes seconds (a minute on a
busy machine); searching it this way takes a tenth of a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from .files import render
from .holes import read_kept

CHUNK = 1024 * 1024
"""The most one read takes; also the longest piece of a line that is matched as one."""
SHOWN_AS_IS = bytes((9, 10, *range(32, 127)))
"""Bytes a reader is shown unchanged (see :func:`files.render`): tab, newline and printable ASCII."""


class Found(Protocol):
    def start(self) -> int: ...


class Prefilter(Protocol):
    """A pattern that finds, in a block of whole lines, where lines that may match start (see
    ``patterns.line_prefilter``; declared here, as this module is standard library only: remote
    agents read logs with it too)."""

    def search(self, text: bytes, pos: int, endpos: int) -> Found | None: ...


@dataclass(frozen=True)
class Line:
    raw: bytes
    """Its bytes, without the newline."""
    start: int
    """Byte offset of its first byte."""
    end: int
    """Byte offset just after it (after its newline, if it has one)."""
    complete: bool = True
    """False for a piece of a line of CHUNK bytes or more, and for the unterminated last line."""
    last: bool = False
    """The unterminated last line of the log: a prompt, or a line still being written."""
    index: int = 0
    """How many whole lines the reader went past before this one (given out or passed over)."""
    continued: bool = False
    """It goes on a line the reader gave out a piece of before: its head is in that piece."""


class LineReader:
    """Reads the lines of an open log from ``offset`` up to ``end`` (by default, its end)."""

    def __init__(self, fd: int, offset: int, end: int | None = None, prefilter: Prefilter | None = None) -> None:
        self.fd = fd
        self.prefilter = prefilter
        self.lines_passed = 0
        """Whole lines given out or passed over so far."""
        self.offset = offset
        """Where the next line starts: just after the last whole line (or piece) given out."""
        self.end = end
        self.caught_up = False
        """Whether the last read reached the end (up to the unterminated last line, if any)."""
        self._read_at = offset
        self._carry = b""
        """The line under way: read, not yet given out."""
        self._piece_given = False
        """Whether the line under way was given out in part (so its last part is a piece too)."""

    def read(self, limit: int) -> Iterator[Line]:
        """The lines from ``offset`` on, reading about ``limit`` bytes at the most. The
        unterminated last line comes last, marked ``last``, and ``offset`` stays at its start: a
        new reader from there reads it again, whole, once it is. A caller may stop early:
        ``offset`` is then just after the last line it was given."""
        self.caught_up = False
        while limit > 0:
            wanted = CHUNK if self.end is None else min(CHUNK, self.end - self._read_at)
            chunk, start, _ = read_kept(self.fd, wanted, self._read_at) if wanted > 0 else (b"", self._read_at, 0)
            limit -= len(chunk)
            if start > self._read_at:  # dropped under the cap, maybe while read: the line under way lost its head
                self.offset = self._read_at = start if self.end is None else min(start, self.end)
                self._carry = b""
                continue
            self._read_at += len(chunk)
            yield from self._lines_of(chunk)
            if len(chunk) < wanted or not chunk:
                self.caught_up = True
                if self._carry:
                    yield Line(self._carry, self.offset, self._read_at, False, True, self.lines_passed)
                return

    def _lines_of(self, chunk: bytes) -> Iterator[Line]:
        data = self._carry + chunk
        whole = data.rfind(b"\n") + 1
        self._carry = data[whole:]
        starts = self._candidates(data, whole)
        yield from self._whole_lines(data, whole) if starts is None else self._lines_at(data, whole, starts)
        if whole:
            self._piece_given = False
        # A very long line: given out piece by piece, a piece once a chunk of it is read. So every
        # read gives out something (a reader from ``offset`` with the budget of one chunk stopped
        # where it began, before a line longer than a chunk, and a wait never went past it).
        if len(self._carry) >= CHUNK:
            yield self._piece()

    def _piece(self) -> Line:
        """The line under way, up to its last carriage return if it has one: a progress bar's
        pieces end where an update does, so each shows (rendered, as a terminal shows it) a whole
        update, its last one included. The rest stays, to start the next piece."""
        cut = self._carry.rfind(b"\r")
        size = cut if cut > 0 else len(self._carry)
        piece = Line(
            self._carry[:size],
            self.offset,
            self.offset + size,
            False,
            index=self.lines_passed,
            continued=self._piece_given,
        )
        self.offset, self._carry = piece.end, self._carry[size:]
        self._piece_given = True
        return piece

    def _whole_lines(self, data: bytes, whole: int) -> Iterator[Line]:
        for number, raw in enumerate(data[:whole].split(b"\n")[:-1]):
            continued = number == 0 and self._piece_given
            line = Line(raw, self.offset, self.offset + len(raw) + 1, index=self.lines_passed, continued=continued)
            self.offset = line.end
            self.lines_passed += 1
            yield line

    def _candidates(self, data: bytes, whole: int) -> list[int] | None:
        """Where the lines of ``data[:whole]`` that may match start, or None when every line must
        be looked at (no prefilter, or bytes that do not show as they are)."""
        if self.prefilter is None or not whole or data[:whole].translate(None, SHOWN_AS_IS):
            return None
        starts: list[int] = []
        position = 0
        while position < whole and (found := self.prefilter.search(data, position, whole)) is not None:
            start = data.rfind(b"\n", 0, found.start()) + 1
            starts.append(start)
            position = data.index(b"\n", found.start()) + 1
        return starts

    def _lines_at(self, data: bytes, whole: int, starts: list[int]) -> Iterator[Line]:
        base, position = self.offset, 0
        for start in starts:
            end = data.index(b"\n", start)
            self.lines_passed += data.count(b"\n", position, start)
            continued = start == 0 and self._piece_given
            line = Line(data[start:end], base + start, base + end + 1, index=self.lines_passed, continued=continued)
            self.offset, position = line.end, end + 1
            self.lines_passed += 1
            yield line  # (a caller may stop here: what it was given is counted already)
        self.lines_passed += data.count(b"\n", position, whole)
        self.offset = base + whole


def line_start(fd: int, offset: int) -> int:
    """Where the line holding ``offset`` of the open log ``fd`` starts, for a wait from a cursor
    inside a line (a line begun before the call, finished during it): just after the newline before
    ``offset``, looked for at most CHUNK bytes back, else where the kept output starts, else at the
    last carriage return there (an update of a progress bar starts there, as a reader's pieces
    do), else ``offset`` itself."""
    low = max(0, offset - CHUNK)
    data, start, _ = read_kept(fd, offset - low, low)
    if start >= offset:
        return offset
    data = data[: offset - start]
    if (newline := data.rfind(b"\n")) >= 0:
        return start + newline + 1
    if start > low or start == 0:
        return start
    update = data.rfind(b"\r")
    return start + update if update >= 0 else offset


def new_match(raw: bytes, before: int, search: Callable[[str], Found | None]) -> tuple[str, int] | None:
    """The line ``raw`` rendered and where ``search`` finds a match in it, if it is a match of what
    was written after a wait began: ``before`` is how many of its bytes were written before.

    A line begun before the wait counts when it matches and what it showed before did not (the
    'Listen' of 'Listening on port 80'), or when its new part matches on its own, or when it was
    redrawn (a carriage return) into a line that matches; an old prompt a reply is echoed after
    (">>> " then "print(1)") is not matched again."""
    text = render(raw.rstrip(b"\r"))
    found = search(text)
    if found is None:
        return None
    if before <= 0:
        return text, found.start()
    old = render(raw[:before].rstrip(b"\r"))
    if search(old) is None or not text.startswith(old):
        return text, found.start()
    if (again := search(text[len(old) :])) is not None:
        return text, len(old) + again.start()
    return None
