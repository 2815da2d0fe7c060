"""RE2 patterns made to mean the same to Python's re on a remote host (remote/agent_patterns.py)."""

from __future__ import annotations

import re

import pytest
import re2

from mcp_backgroundr.remote.agent_patterns import as_python

LINES = ["12345", "port: 8080", "d]]", "\u0661\u0662\u0663", "a.b", "tab\there", "x-y_z", "]"]


@pytest.mark.parametrize(
    "pattern",
    [
        "^[[:digit:]]+$",
        "[[:alpha:]]+: [[:digit:]]+",
        "^[[:^digit:]]+$",
        r"^\d+$",
        r"^\D+$",
        r"^[\w-]+$",
        r"\s",
        r"^\S+$",
        r"\Qa.b\E",
        r"\x{2E}",
        r"[]]",
        r"[^]a]",
        r"^\\?d",
        r"[[:punct:]]{2}",
    ],
)
def test_a_translated_pattern_matches_the_lines_re2_matches(pattern: str) -> None:
    translated = re.compile(as_python(pattern))
    assert [bool(translated.search(line)) for line in LINES] == [bool(re2.search(pattern, line)) for line in LINES]


@pytest.mark.parametrize("pattern", [r"[a[:^digit:]]", r"[\D]", "[[:nothing:]]"])
def test_what_has_no_translation_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"translation|not a POSIX class"):
        as_python(pattern)
