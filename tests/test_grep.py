from __future__ import annotations

import re
import tempfile
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import re2

from mcp_backgroundr.logs import files, grep, lines, patterns


def _log(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "task.log"
    path.write_bytes(data)
    return path


def test_matching_lines_carry_their_line_numbers(tmp_path: Path) -> None:
    path = _log(tmp_path, b"ok\nERROR one\nok\nERROR two")
    found = grep.grep_log(path, re.compile("ERROR"), 0, 16384)
    assert found.text == "2: ERROR one\n4: ERROR two"
    assert (found.matches, found.shown, found.resume_at, found.cursor) == (2, 2, None, path.stat().st_size)


def test_line_numbers_count_from_the_start_of_the_log_when_searching_from_a_cursor(tmp_path: Path) -> None:
    path = _log(tmp_path, b"ERROR a\nok\nERROR b\n")
    found = grep.grep_log(path, re.compile("ERROR"), len(b"ERROR a\n"), 16384)
    assert found.text == "3: ERROR b"


def test_matches_beyond_the_budget_are_counted_and_resumable(tmp_path: Path) -> None:
    path = _log(tmp_path, b"".join(b"hit %d\n" % i for i in range(1000)))
    found = grep.grep_log(path, re.compile("hit"), 0, 200)
    assert found.matches == 1000
    assert len(found.text.encode()) <= 200
    assert found.resume_at is not None
    rest = grep.grep_log(path, re.compile("hit"), found.resume_at, 10**6)
    assert rest.text.splitlines()[0] == f"{found.shown + 1}: hit {found.shown}"


def test_a_huge_matching_line_is_cut_and_later_lines_keep_their_numbers(tmp_path: Path) -> None:
    # Given out in pieces of CHUNK bytes: the needle is in the last, after x's.
    path = _log(tmp_path, b"x" * (3 * lines.CHUNK - 100) + b" needle\nneedle too\n")
    found = grep.grep_log(path, re.compile("needle"), 0, 1000)
    assert found.text.startswith("1: [... ")  # shown around its match, which is far in
    assert found.text.splitlines()[0].endswith("xxx needle")  # the last piece: the line ends there
    assert found.matches == 2
    everything = grep.grep_log(path, re.compile("too"), 0, 1000)
    assert everything.text == "2: needle too"


PLAIN_PIECES = ["a", "b", "ab ", "done", "\n", "\n", " ", "\t", "x" * 5]
SPECIAL_PIECES = ["", "", "", "\r", "\x1b[1m", "é"]
"""Bytes that are shown otherwise than they are written: a chunk with one is matched line by line."""
PATTERNS = r"a ^a a$ ^$ b+a [^a]b \s a|^b (?i)A \bab\b a.b ^\w+$ \Aa b\z x* (?-m)^a ^done (?s)a.*b [^\n]b".split()  # noqa: SIM905


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    pieces=st.lists(st.sampled_from(PLAIN_PIECES), max_size=60),
    special=st.sampled_from(SPECIAL_PIECES),
    pattern_text=st.sampled_from(PATTERNS),
)
def test_grep_finds_exactly_the_lines_that_match_one_by_one(pieces: list[str], special: str, pattern_text: str) -> None:
    """Blocks of plain lines are searched at once (a prefilter finds candidate lines), and the
    client's pattern is compiled once, in its multi-line form, for both: the lines found must be
    exactly those that the pattern as written matches when each line is matched on its own."""
    data = "".join([*pieces[: len(pieces) // 2], special, *pieces[len(pieces) // 2 :]]).encode()
    pattern = patterns.compiled("grep", pattern_text)
    assert pattern is not None
    each_line = data.split(b"\n")
    if each_line[-1] == b"":
        each_line.pop()
    shown = [files.render(raw.rstrip(b"\r")) for raw in each_line]
    as_written = re2.compile(pattern_text)
    expected = [f"{number}: {text}" for number, text in enumerate(shown, 1) if as_written.search(text)]
    with tempfile.TemporaryDirectory() as folder:
        found = grep.grep_log(_log(Path(folder), data), pattern, 0, 10**6)
    assert (found.text.split("\n") if found.text else []) == expected
    assert found.matches == len(expected)


def test_a_pattern_is_compiled_once_for_every_call_that_gives_it() -> None:
    assert patterns.compiled("grep", "ERROR [0-9]+") is patterns.compiled("output_pattern", "ERROR [0-9]+")
