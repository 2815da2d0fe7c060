"""Search a task's log: matching lines with their line numbers, within the answer budget."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .logs import dropped_bytes, render

CHUNK = 1024 * 1024
LINE_CUT_MARKER = " [... line cut ...]"


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


class _Collector:
    def __init__(self, pattern: re.Pattern[str], budget: int) -> None:
        self.pattern = pattern
        self.budget = budget
        self.shown: list[str] = []
        self.used = 0
        self.matches = 0
        self.resume_at: int | None = None

    def offer(self, raw: bytes, number: int, offset: int) -> None:
        text = render(raw.rstrip(b"\r"))
        if not self.pattern.search(text):
            return
        self.matches += 1
        if self.resume_at is not None:
            return
        entry = f"{number}: {text}"
        size = len(entry.encode()) + 1
        if self.used + size <= self.budget:
            self.shown.append(entry)
            self.used += size
        elif not self.shown:  # one line longer than the whole budget: show its head
            self.shown.append(entry[: self.budget - len(LINE_CUT_MARKER)] + LINE_CUT_MARKER)
            self.used = self.budget
        else:
            self.resume_at = offset


def _count_lines_before(fd: int, start: int, end: int) -> int:
    count, offset = 0, start
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def grep_log(path: Path, pattern: re.Pattern[str], since: int, budget: int) -> GrepResult:
    """Lines of the log from byte ``since`` on that match ``pattern``.

    Blocking (it may read the whole log): run it in a worker thread.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return GrepResult("", 0, 0, 0, 0, None)
    try:
        size = os.fstat(fd).st_size
        dropped = dropped_bytes(path)
        since = min(max(since, dropped), size)
        number = 1 + _count_lines_before(fd, dropped, since)
        found = _Collector(pattern, budget)
        offset, line_start, carry = since, since, b""
        while offset < size:
            chunk = os.pread(fd, min(CHUNK, size - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for raw in lines:
                found.offer(raw, number, line_start)
                number += 1
                line_start += len(raw) + 1
            if len(carry) > CHUNK:  # a very long line: match it piece by piece
                found.offer(carry, number, line_start)
                line_start += len(carry)
                carry = b""
        if carry:
            found.offer(carry, number, line_start)
        text = "\n".join(found.shown)
        return GrepResult(text, found.matches, len(found.shown), size, size, found.resume_at, dropped)
    finally:
        os.close(fd)
