"""The matching lines of a grep, numbered, within an answer's budget: the first that fit, or the
last ``lines`` of them. Standard library only: remote agents grep with it too."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .files import dropped_note, matched_part, render
from .lines import Found, Line

LINE_CUT_MARKER = " [... line cut ...]"
CUT_MARKERS_CHARACTERS = 80
"""Room a shown line keeps for its number and the marks of its cuts."""


class GrepCollector:
    """The matching lines of a grep, numbered, within an answer's budget of ``budget`` bytes: the
    first that fit (``resume_at`` then says where the rest start), or, given ``last``, the last
    ``last`` of them that fit (``grep`` with ``lines``, as ``grep | tail -n``).

    A line longer than a read comes in pieces (see :class:`lines.LineReader`): it is counted
    once, by the first piece that matches, and the pieces after it are passed over (else the line
    was counted once a piece, and the advice to go on from the next piece gave the same line
    again). A line longer than the whole budget is shown around its match, its cuts said. Lines
    are matched as shown without ``raw`` (no ANSI sequences), and shown with them when ``raw``."""

    def __init__(
        self, search: Callable[[str], Found | None], budget: int, last: int | None = None, raw: bool = False
    ) -> None:
        self.search = search
        self.budget = budget
        self.last = last
        self.raw = raw
        self.kept: deque[str] = deque()
        self.used = 0
        self.matches = 0
        self.resume_at: int | None = None
        """Byte offset of the first matching line not shown, if any (without ``last``)."""
        self._last_matched: int | None = None

    def offer(self, line: Line, number: int) -> None:
        """A line (or a piece of one), numbered ``number``."""
        if number == self._last_matched:
            return
        text = render(line.raw.rstrip(b"\r"))
        found = self.search(text)
        if found is None:
            return
        self._last_matched = number
        self.matches += 1
        if self.resume_at is not None or self.last == 0:
            return
        if self.raw:
            text = render(line.raw.rstrip(b"\r"), raw=True)
        entry = f"{number}: {text}"
        if len(entry.encode()) + 1 > self.budget:  # one line longer than the whole budget: shown around its match
            entry = self._around(number, text, found.start(), line)
        size = len(entry.encode()) + 1
        if self.last is not None:
            self.kept.append(entry)
            self.used += size
            while len(self.kept) > self.last or (self.used > self.budget and len(self.kept) > 1):
                self.used -= len(self.kept.popleft().encode()) + 1
        elif self.used + size <= self.budget or not self.kept:
            self.kept.append(entry)
            self.used += size
        else:
            self.resume_at = line.start

    def _around(self, number: int, text: str, start: int, line: Line) -> str:
        """``NUMBER: text`` of a long line, cut around its match to fit the budget; a piece of a
        longer line is marked cut where the line goes on (the counts of the cuts are the piece's)."""
        width = max(1, self.budget - CUT_MARKERS_CHARACTERS)
        head = LINE_CUT_MARKER.strip() if line.continued else ""
        tail = LINE_CUT_MARKER if not line.complete else ""
        while True:
            entry = f"{number}: {head}{matched_part(text, start, width)}{tail}"
            if len(entry.encode()) <= self.budget or width == 1:
                return entry
            width = max(1, width // 2)  # wide characters: fewer of them fit


def grep_notes(matches: int, shown: int, resume_at: int | None, last: int | None, dropped: int) -> str | None:
    """What a grep's answer says of the matching lines it does not show, and of a capped log."""
    notes = []
    if resume_at is not None:
        notes.append(
            f"{matches - shown} more matching lines do not fit in the budget; "
            f"call again with since={resume_at} to see them, or narrow the pattern"
        )
    elif last is not None and matches > shown:
        notes.append(
            f"the last {shown} of {matches} matching lines (lines={last}); omit lines to see the first ones, "
            "or narrow the pattern"
        )
    if dropped:
        notes.append(f"{dropped_note(0, dropped)}: line numbers count from there")
    return "; ".join(notes) or None
