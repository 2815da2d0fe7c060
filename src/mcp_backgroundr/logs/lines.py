"""Reading a log forward line by line, a bounded number of bytes at a time.

Both ways of looking through a log for lines — grep, and a wait for a matching line — read it
here: in chunks (so a worker-thread step stays bounded), only what is kept (output dropped under
the size cap is skipped, even when it is dropped during the read), and a line longer than a chunk
in pieces (a 50 MB line without a newline never sits in memory whole).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .holes import read_kept

CHUNK = 1024 * 1024
"""The most one read takes; also the longest piece of a line that is matched as one."""


@dataclass(frozen=True)
class Line:
    raw: bytes
    """Its bytes, without the newline."""
    start: int
    """Byte offset of its first byte."""
    end: int
    """Byte offset just after it (after its newline, if it has one)."""
    complete: bool = True
    """False for a piece of a line longer than CHUNK, and for the unterminated last line."""
    last: bool = False
    """The unterminated last line of the log: a prompt, or a line still being written."""


class LineReader:
    """Reads the lines of an open log from ``offset`` up to ``end`` (by default, its end)."""

    def __init__(self, fd: int, offset: int, end: int | None = None) -> None:
        self.fd = fd
        self.offset = offset
        """Where the next line starts: just after the last whole line (or piece) given out."""
        self.end = end
        self.caught_up = False
        """Whether the last read reached the end (up to the unterminated last line, if any)."""
        self._read_at = offset
        self._carry = b""
        """The line under way: read, not yet given out."""

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
                    yield Line(self._carry, self.offset, self._read_at, complete=False, last=True)
                return

    def _lines_of(self, chunk: bytes) -> Iterator[Line]:
        lines = (self._carry + chunk).split(b"\n")
        self._carry = lines.pop()
        for raw in lines:
            line = Line(raw, self.offset, self.offset + len(raw) + 1)
            self.offset = line.end
            yield line
        if len(self._carry) > CHUNK:  # a very long line: given out piece by piece
            piece = Line(self._carry, self.offset, self.offset + len(self._carry), complete=False)
            self.offset, self._carry = piece.end, b""
            yield piece
