from __future__ import annotations

from pathlib import Path

import pytest

from mcp_backgroundr.errors import InvalidArgumentError
from mcp_backgroundr.logs import files


def _log(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "task.log"
    path.write_bytes(data)
    return path


def test_tail_returns_the_last_lines_and_a_cursor_at_the_end(tmp_path: Path) -> None:
    path = _log(tmp_path, b"".join(b"line %d\n" % i for i in range(100)))
    piece = files.read_tail(path, 3, 16384, writer_alive=False)
    assert piece.text == "line 97\nline 98\nline 99\n"
    assert piece.cursor == piece.size == path.stat().st_size
    assert not piece.truncated


def test_tail_without_trailing_newline_counts_the_partial_line(tmp_path: Path) -> None:
    path = _log(tmp_path, b"a\nb\nc")
    assert files.read_tail(path, 2, 16384, writer_alive=False).text == "b\nc"


def test_tail_of_zero_lines_is_empty(tmp_path: Path) -> None:
    path = _log(tmp_path, b"a\nb\n")
    piece = files.read_tail(path, 0, 16384, writer_alive=False)
    assert (piece.text, piece.cursor) == ("", 4)


def test_tail_of_one_huge_line_is_cut_with_a_marker(tmp_path: Path) -> None:
    path = _log(tmp_path, b"x" * 5_000_000)
    piece = files.read_tail(path, 10, 1000, writer_alive=False)
    assert piece.truncated and piece.truncation
    assert piece.text.startswith("[... line cut")
    assert piece.text.endswith("x" * 1000)
    assert len(piece.text) < 1200
    assert piece.cursor == 5_000_000


def test_tail_that_drops_whole_lines_says_so(tmp_path: Path) -> None:
    path = _log(tmp_path, b"".join(b"%09d\n" % i for i in range(1000)))
    piece = files.read_tail(path, 500, 1000, writer_alive=False)
    assert piece.truncated
    assert piece.text.endswith("000000999\n")
    assert len(piece.text.encode()) <= 1000


def test_forward_reads_concatenate_to_the_log_exactly(tmp_path: Path) -> None:
    data = "".join(f"{i} é€𝄞\n" if i % 7 else "no newline here " * 20 for i in range(3000)).encode()
    path = _log(tmp_path, data)
    cursor, pieces = 0, []
    while True:
        piece = files.read_forward(path, cursor, 1000, writer_alive=False)
        pieces.append(piece.text)
        assert piece.cursor >= cursor
        if piece.cursor == cursor:
            break
        cursor = piece.cursor
    assert "".join(pieces).encode() == data


def test_forward_holds_back_a_character_still_being_written(tmp_path: Path) -> None:
    path = _log(tmp_path, "ab€".encode()[:-1])
    piece = files.read_forward(path, 0, 1000, writer_alive=True)
    assert (piece.text, piece.cursor) == ("ab", 2)
    finished = files.read_forward(path, 0, 1000, writer_alive=False)
    assert finished.text == "ab\ufffd" and finished.cursor == 4


def test_forward_past_the_end_is_an_invalid_argument(tmp_path: Path) -> None:
    path = _log(tmp_path, b"abc")
    with pytest.raises(InvalidArgumentError, match="since=4"):
        files.read_forward(path, 4, 1000, writer_alive=False)


def test_forward_cut_mid_line_says_how_to_continue(tmp_path: Path) -> None:
    path = _log(tmp_path, b"y" * 10_000)
    piece = files.read_forward(path, 0, 1000, writer_alive=False)
    assert piece.truncated and piece.truncation and "since=1000" in piece.truncation
    assert piece.text == "y" * 1000


def test_render_replaces_invalid_utf8_and_control_bytes() -> None:
    assert files.render(b"ok\x00\xff\xfe\x07\tend\n") == "ok\ufffd\ufffd\ufffd\ufffd\tend\n"


def test_render_collapses_carriage_return_progress() -> None:
    assert files.render(b"10%\r50%\r100%\ndone\r\n") == "100%\ndone\n"


def test_log_files_are_private(tmp_path: Path) -> None:
    path = files.create_log(tmp_path / "logs", "abc")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700


def test_tail_that_starts_mid_line_drops_the_partial_line_instead_of_marking_it(tmp_path: Path) -> None:
    path = _log(tmp_path, b"".join(b"%06d\n" % i for i in range(10_000)))
    piece = files.read_tail(path, 5000, 1000, writer_alive=False)
    assert piece.truncated
    assert "line cut" not in piece.text
    first = piece.text.splitlines()[0]
    assert len(first) == 6
    assert piece.text.endswith("009999\n")


def test_render_shortens_long_runs_of_unreadable_bytes() -> None:
    assert files.render(b"start" + b"\xff" * 100 + b"end") == "start\ufffd[100 unreadable bytes]end"
