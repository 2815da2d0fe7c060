from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import pytest

from mcp_backgroundr.logs import files, grep, holes
from mcp_backgroundr.logs.matches import grep_notes
from mcp_backgroundr.platform.heads import PUNCH, dropper


def _log(tmp_path: Path, lines: int) -> Path:
    path = tmp_path / "task.log"
    path.write_bytes(b"".join(b"line %07d\n" % i for i in range(lines)))
    return path


def test_enforce_drops_the_head_and_keeps_offsets(tmp_path: Path) -> None:
    path = _log(tmp_path, 200_000)  # 2.6 MB
    size = path.stat().st_size
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    dropped = files.dropped_bytes(path)
    assert path.stat().st_size == size
    assert os.stat(path).st_blocks * 512 <= 1024 * 1024
    assert size - dropped <= 1024 * 1024
    assert dropped % holes.BLOCK == 0
    assert files.read_tail(path, 1, 16384, writer_alive=False).text == "line 0199999\n"


def test_punching_holes_looks_up_libc_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup holds the interpreter lock for about 80 us; the pacing of a log as fast as `yes` under a
    small cap punches it hundreds of times a second (each punch made one, and ten such logs kept the event
    loop from the lock)."""
    loaded = []
    real = ctypes.CDLL

    def counted(*args: object, **kwargs: object) -> ctypes.CDLL:
        loaded.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ctypes, "CDLL", counted)
    drop = dropper(PUNCH)
    for rounds in range(1, 4):
        path = _log(tmp_path, 200_000)
        holes.enforce(path, 1024 * 1024, drop)
        assert files.dropped_bytes(path) > 0, rounds
    assert len(loaded) <= 1


def test_reads_from_a_dropped_cursor_say_what_was_lost(tmp_path: Path) -> None:
    path = _log(tmp_path, 200_000)
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    dropped = files.dropped_bytes(path)
    piece = files.read_forward(path, 0, 4096, writer_alive=False)
    assert piece.truncation is not None
    assert f"bytes 0 to {dropped} were dropped" in piece.truncation
    assert "\x00" not in piece.text
    assert piece.cursor > dropped
    found = grep.grep_log(path, re.compile("line 0199999"), 0, 16384)
    assert found.matches == 1
    assert found.dropped == dropped


def test_a_log_under_its_cap_is_left_alone(tmp_path: Path) -> None:
    path = _log(tmp_path, 10)
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    assert files.dropped_bytes(path) == 0


MIB = 1024 * 1024


def test_a_writer_that_starts_is_looked_at_again_at_once_whatever_the_cap() -> None:
    # Before any write, and at the first writes, the next look comes within a millisecond: a
    # pause paced on an assumed rate (64 MiB cap: 0.19 s) let `yes` write 3.5 to 5.8 times the
    # cap before the capper's next look (a new-user trial on 6220fa7).
    pace = holes.Pace(0)
    quiet = pace.next_pause(64 * MIB, 0, 0)
    assert quiet is not None and quiet <= holes.MIN_PAUSE_SECONDS
    pauses = [pace.next_pause(64 * MIB, size, size) for size in range(4096, 10 * 4096, 4096)]
    assert all(p is not None and p <= holes.MIN_PAUSE_SECONDS * 2**n for n, p in enumerate(pauses, start=1))


def test_a_read_back_to_the_dropped_head_says_what_the_cap_dropped(tmp_path: Path) -> None:
    """A wait from a cursor the cap dropped, or a tail of more lines than are kept, whose kept output
    fits the budget: it was shown as all there was, nothing said of the bytes dropped before it."""
    path = _log(tmp_path, 200_000)
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    dropped = files.dropped_bytes(path)
    budget = 4 * 1024 * 1024  # more than the cap keeps
    for floor, piece in (
        (6, files.read_tail(path, 10**6, budget, writer_alive=False, floor=6)),
        (0, files.read_tail(path, 10**6, budget, writer_alive=False)),
    ):
        assert piece.truncated and piece.truncation == (
            f"bytes {floor} to {dropped} were dropped to keep the log under its size cap; "
            "the output continues from there"
        )
        assert piece.text.endswith("line 0199999\n")
    fitting = files.read_tail(path, 3, budget, writer_alive=False)
    assert (fitting.truncated, fitting.truncation) == (False, None)


def test_a_read_cut_to_its_budget_past_the_dropped_head_says_both(tmp_path: Path) -> None:
    path = _log(tmp_path, 200_000)
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    dropped = files.dropped_bytes(path)
    piece = files.read_tail(path, 10**6, 16384, writer_alive=False, floor=6)
    assert piece.truncation is not None
    assert piece.truncation.startswith(f"bytes 6 to {dropped} were dropped to keep the log under its size cap; ")
    assert piece.truncation.endswith(f"read them forward with get_task_status since={dropped}")


def test_a_grep_of_a_capped_log_says_what_the_cap_dropped_as_every_read_does(tmp_path: Path) -> None:
    """It said "the first N bytes were dropped (size cap)", where every other read says it its own way."""
    path = _log(tmp_path, 200_000)
    holes.enforce(path, 1024 * 1024, dropper(PUNCH))
    dropped = files.dropped_bytes(path)
    found = grep.grep_log(path, re.compile("line 0199999"), 0, 16384)
    note = grep_notes(found.matches, found.shown, found.resume_at, None, found.dropped)
    assert note == f"{files.dropped_note(0, dropped)}: line numbers count from there"
