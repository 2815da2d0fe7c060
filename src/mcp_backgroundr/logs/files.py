"""Task log files: the append target handed to the child, and bounded reads.

A child writes its stdout and stderr straight into its log (opened here in
append mode); the server only ever reads. Reads seek, so their cost depends on
the response budget, never on the size of the log. A cursor is a byte offset
into the log: reading forward from a cursor returns exactly the bytes that
follow it, never one byte twice and never one lost.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError
from .holes import dropped_bytes as dropped_bytes  # where the kept output of a log starts
from .holes import read_kept

LOG_FILE_MODE = 0o600

# C0 controls other than tab, newline, carriage return and escape, and DEL, are
# shown as U+FFFD: binary output is unreadable either way, and these confuse
# whatever displays the text.
_CONTROL_CHARS = {code: "\ufffd" for code in (*range(0, 9), 11, 12, *range(14, 27), *range(28, 32), 127)}


@dataclass(frozen=True)
class OutputSlice:
    """A rendered piece of a log and where it sits in the file."""

    text: str
    cursor: int
    size: int
    truncated: bool
    truncation: str | None
    dropped: int = 0
    """Bytes at the head of the log dropped to keep it under its cap."""


def create_log(logs_dir: Path, task_id: str) -> Path:
    """Create an empty log for a task, readable by its owner only."""
    logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = logs_dir / f"{task_id}.log"
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, LOG_FILE_MODE))
    return path


def open_append(path: Path) -> int:
    """Open a log for appending; the descriptor is what the child writes to."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)


def log_size(path: Path) -> int:
    return existing_size(path) or 0


def existing_size(path: Path) -> int | None:
    """The size of a log, None when it is gone."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and other escapes.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])")


# Binary output renders as long runs of U+FFFD, 3 bytes each: shown shortened.
_UNREADABLE_RUN = re.compile("\ufffd{8,}")


def _shorten_unreadable(match: re.Match[str]) -> str:
    return f"\ufffd[{len(match.group())} unreadable bytes]"


# Erase in line: to its end (ESC[K, ESC[0K) or all of it (ESC[2K), a progress bar's usual redraw.
_ERASE_IN_LINE = re.compile(r"\x1b\[[02]?K")
_ERASE_WHOLE_LINE = "\x1b[2K"


def render(data: bytes, *, raw: bool = False) -> str:
    """Decode log bytes for a reader: invalid UTF-8 and control bytes become U+FFFD,
    carriage-return updates are shown the way a terminal shows them (see
    :func:`_as_a_terminal_shows`), and ANSI escape sequences are removed unless ``raw``."""
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        text = "\n".join(_as_a_terminal_shows(line, raw) if "\r" in line else line for line in text.split("\n"))
    if not raw and "\x1b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    return _UNREADABLE_RUN.sub(_shorten_unreadable, text.translate(_CONTROL_CHARS))


def _as_a_terminal_shows(line: str, raw: bool) -> str:
    """A line of carriage-return updates as a terminal shows it: each update is written over the
    one before from the first column, so a longer earlier one shows past a shorter later one
    (``abcdef\\rXY`` shows ``XYcdef``), unless an update erased the line (ESC[K, ESC[2K). Counted
    in characters, without ANSI sequences; with ``raw`` the last update keeps its sequences.

    Looked at from the last update back, each older one adds only what shows past the longest
    after it: linear in the line, however many updates it holds."""
    updates = line.rstrip("\r").split("\r")
    shown, width = "", 0
    for age, update in enumerate(reversed(updates)):
        erases = "\x1b" in update and _ERASE_IN_LINE.search(update) is not None
        visible = update.rsplit(_ERASE_WHOLE_LINE, 1)[-1] if erases else update
        if "\x1b" in visible:
            visible = _ANSI_ESCAPE.sub("", visible)
        if age == 0:
            shown, width = (update if raw else visible), len(visible)
        elif len(visible) > width:
            shown, width = shown + visible[width:], len(visible)
        if erases:
            break
    return shown


MATCHED_LINE_CHARS = 400
"""The most of a matching line a wait's answer shows (an answer has a budget of about 16 KiB, and
a line may be megabytes long): the part around the match, the rest cut, and said so."""


def matched_part(text: str, start: int, width: int = MATCHED_LINE_CHARS) -> str:
    """What an answer shows of the matching line ``text``, whose match starts at ``start``: all of
    it when short, else ``width`` characters from a little before the match, each cut said."""
    if len(text) <= width:
        return text
    begin = max(0, min(start - width // 4, len(text) - width))
    after = len(text) - begin - width
    head = f"[... {begin} characters cut ...]" if begin else ""
    tail = f"[... {after} characters cut ...]" if after else ""
    return head + text[begin : begin + width] + tail


def _incomplete_utf8_tail(data: bytes) -> int:
    """Length of a UTF-8 sequence cut off at the end of ``data`` (0 when none)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: keep looking for the lead byte
        if byte & 0xE0 == 0xC0:
            needed = 2
        elif byte & 0xF0 == 0xE0:
            needed = 3
        elif byte & 0xF8 == 0xF0:
            needed = 4
        else:
            return 0
        return back if back < needed else 0
    return 0


def _read(path: Path, offset: int | None, length: int) -> tuple[bytes, int, int, int]:
    """Read up to ``length`` bytes at ``offset`` (None: the last ``length`` bytes), leaving out
    what was dropped under the cap, even while the read ran (see :func:`holes.read_kept`).

    Returns the bytes, the offset they start at, the file's size and where its kept output
    starts (never past the size returned).

    Raises:
        FileNotFoundError: the log is gone (see :func:`gone`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - length) if offset is None else offset
        data, start, kept = read_kept(fd, max(0, min(length, size - start)), start)
        return data[: max(0, size - start)], start, max(size, kept), kept
    finally:
        os.close(fd)


LINE_BEGUN_BEFORE = "[... the start of this line was written before the wait ...]"
"""What a wait's output starts with when the wait began inside a line (its matched_line shows it whole)."""


def read_tail(
    path: Path, lines: int, budget: int, *, writer_alive: bool, floor: int | None = None, raw: bool = False
) -> OutputSlice:
    """The last ``lines`` lines of a log after byte ``floor``, at most ``budget`` bytes of it.

    With ``floor`` the caller asked for what was written after it (a wait), not for lines,
    and a cut says so. An answer that reaches back to where the log's cap dropped its head says
    which bytes the cap dropped, as a read forward does (:func:`dropped_note`).
    """
    asked, instead = (
        (f"the {lines} requested lines do not", ", or ask it for fewer lines")
        if floor is None
        else (f"what was written after cursor {floor} does not", "")
    )
    # One byte before the window tells whether the window starts at a line start.
    try:
        data, read_from, size, dropped = _read(path, None, budget + 1)
    except FileNotFoundError:
        return gone(path)
    lost = _lost(floor or 0, dropped)
    floor = max(floor or 0, dropped)
    window_start = max(floor, size - budget)
    into = window_start - read_from
    starts_line = data[into - 1 : into] == b"\n" if into >= 1 else window_start == floor
    data = data[into:]
    held = _incomplete_utf8_tail(data) if writer_alive else 0
    data = data[: len(data) - held]
    cursor = window_start + len(data)
    if lines == 0:
        return OutputSlice("", cursor, size, False, None, dropped)
    if not data:
        return OutputSlice("", cursor, size, bool(lost), _continued(lost), dropped)

    start = _start_of_last_lines(data, lines)
    if start is not None:
        return OutputSlice(render(data[start:], raw=raw), cursor, size, False, None, dropped)
    if window_start == floor:
        text = render(data, raw=raw) if starts_line else LINE_BEGUN_BEFORE + render(data, raw=raw)
        return OutputSlice(text, cursor, size, bool(lost), _continued(lost), dropped)
    first_newline = data.find(b"\n")
    if not starts_line and 0 <= first_newline < len(data) - 1:
        data = data[first_newline + 1 :]  # drop the partial first line: whole lines read better
        starts_line = True
    skipped = cursor - len(data) - floor
    note = (
        f"{lost}{asked} fit in the {budget}-byte budget: the {skipped} bytes before the text shown are left out; "
        f"read them forward with get_task_status since={floor}{instead}"
    )
    text = render(data, raw=raw)
    if not starts_line:
        text = f"[... line cut: its first part and {skipped} earlier bytes are not shown ...]" + text
    return OutputSlice(text, cursor, size, True, note, dropped)


def _lost(start: int, dropped: int) -> str:
    """What an answer read from ``start`` says first when the cap dropped bytes after it ("" if none)."""
    return f"{dropped_note(start, dropped)}; " if start < dropped else ""


_CONTINUED = "the output continues from there"


def _continued(lost: str) -> str | None:
    """The note of an answer that shows all that is kept after the bytes the cap dropped."""
    return f"{lost}{_CONTINUED}" if lost else None


def shows_all_kept(truncation: str | None) -> bool:
    """Whether an answer with this note left out only what the cap dropped (it shows all that is kept)."""
    return truncation is not None and truncation.endswith(_CONTINUED)


def _start_of_last_lines(data: bytes, lines: int) -> int | None:
    """Offset in ``data`` where its last ``lines`` lines begin, or None if it holds fewer."""
    found, newline = _newlines_back(data, len(data) - 1 if data.endswith(b"\n") else len(data), lines)
    return newline + 1 if found == lines else None


def _newlines_back(data: bytes, end: int, wanted: int) -> tuple[int, int]:
    """Walk back from ``end`` in ``data`` over up to ``wanted`` newlines: how many it passed, and
    the offset of the last one passed (the start of the lines after it), or ``end`` if none."""
    found, pos = 0, end
    while found < wanted and (newline := data.rfind(b"\n", 0, pos)) >= 0:
        found, pos = found + 1, newline
    return found, pos


def read_forward(path: Path, since: int, budget: int, *, writer_alive: bool, raw: bool = False) -> OutputSlice:
    """The bytes of a log from ``since`` on, at most ``budget`` of them.

    Bytes before ``since`` that were dropped to keep the log under its cap are skipped,
    and the answer says so.
    """
    asked = since
    try:
        data, since, size, dropped = _read(path, since, budget)
    except FileNotFoundError:
        return gone(path)
    if asked > size:
        raise InvalidArgumentError(
            "since",
            asked,
            f"it is past the end of the output ({size} bytes); pass a cursor from an earlier answer, or omit since",
        )
    lost = _lost(asked, dropped)
    remaining_after_chunk = size - since - len(data)
    if remaining_after_chunk > 0:
        last_newline = data.rfind(b"\n")
        last_update = data.rfind(b"\r")
        if last_newline >= len(data) // 2:
            data = data[: last_newline + 1]
        elif last_update > last_newline + 1:  # a carriage-return update cut: the next read starts with it
            data = data[:last_update]
        else:
            data = data[: len(data) - _incomplete_utf8_tail(data)]
    elif writer_alive:
        data = data[: len(data) - _incomplete_utf8_tail(data)]
    cursor = since + len(data)
    left = size - cursor
    if remaining_after_chunk <= 0:
        return OutputSlice(render(data, raw=raw), cursor, size, bool(lost), _continued(lost), dropped)
    cut = "" if data.endswith(b"\n") else "cut mid-line (the line is longer than the budget); "
    note = f"{lost}output {cut}{left} more bytes follow; call again with since={cursor} to read them"
    return OutputSlice(render(data, raw=raw), cursor, size, True, note, dropped)


def gone_note(path: Path) -> str:
    """What a read, a grep or a wait says of a task whose log file is gone (deleted by someone
    else: the server never deletes a log its task may still write)."""
    return (
        f"its log file {path} is gone (deleted outside this server): the output it held is lost, and "
        "what the task writes from now on cannot be read (the task itself is not affected)"
    )


def no_pattern_can_match(task_id: str, path: Path) -> str:
    """The refusal of a pattern wait on a task whose log file is gone."""
    return (
        f"task {task_id}: {gone_note(path)}; so no output_pattern can match: wait for its exit or a port "
        "instead, or end it"
    )


def gone(path: Path) -> OutputSlice:
    """The answer of a read of a log that is gone: no output, and why."""
    return OutputSlice("", 0, 0, True, gone_note(path))


def dropped_note(since: int, dropped: int) -> str:
    """What a read from ``since`` says when the log's cap dropped the bytes from there to
    ``dropped``: the tool's answer and ``logs -f`` say it alike."""
    return f"bytes {since} to {dropped} were dropped to keep the log under its size cap"


TAIL_BLOCK = 64 * 1024


def offset_of_last_lines(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of a log begin (reading backwards in blocks)."""
    size = log_size(path)
    if lines <= 0 or size == 0:
        return size
    with path.open("rb") as file:
        end, found = size, 0
        file.seek(size - 1)
        skip_final_newline = file.read(1) == b"\n"
        while end > 0:
            start = max(0, end - TAIL_BLOCK)
            file.seek(start)
            block = file.read(end - start)
            search_end = len(block) - 1 if skip_final_newline and end == size else len(block)
            passed, newline = _newlines_back(block, search_end, lines - found)
            found += passed
            if found == lines:
                return start + newline + 1
            end = start
    return 0
