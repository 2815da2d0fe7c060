"""Patterns from clients, compiled for RE2: matching takes time linear in the text, whatever the pattern.

Python's ``re`` backtracks: ``(a+)+$`` against a line of 30 ``a`` and a ``b`` runs for minutes,
and a model writes such patterns by accident. RE2 (``google-re2``) never backtracks; the price
is that it refuses backreferences (``\\1``) and lookaround (``(?=``, ``(?!``, ``(?<=``), which
no linear-time engine can offer. Such a pattern gets a one-line error saying so.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Protocol

import re2

from ..errors import InvalidArgumentError
from .lines import Found, Prefilter

SYNTAX_URL = "https://github.com/google/re2/wiki/Syntax"
PATTERN_LIMIT_NOTE = "RE2 syntax (linear time: no backreferences or lookaround)"
"""What the tool descriptions say about patterns."""
MAX_PATTERN_MEMORY = 1 << 20
"""The memory RE2 may give one pattern; a pattern whose program needs more is refused as too large.
RE2 compiles holding the interpreter lock (in any thread: the event loop waits for it all the same),
and a short pattern can make a large program: ``\\pL{300}`` (a Unicode letter, 300 times) took
156 ms under RE2's own default of 8 MiB. Under 1 MiB the costliest pattern accepted compiles in
about 30 ms and one refused in about 10 ms (``python bench/pattern_compile.py``), and matching the
usual log patterns is as fast as under 8 MiB."""


class Pattern(Protocol):
    """A compiled client pattern: all the matching code needs of it."""

    @property
    def pattern(self) -> str: ...

    def search(self, text: str) -> Found | None: ...


_WHOLE_TEXT_ANCHOR = re.compile(r"\\[Az]|\(\?[a-zA-Z]*-")
"""``\\A``, ``\\z`` and flags turned off (``(?-m)``) mean other things in a block than in one line."""


MAX_PATTERN_CHARACTERS = 4096
"""The longest pattern a client may give. RE2 compiles in time linear in the pattern, holding the
interpreter lock (in any thread: the event loop waits for it all the same), and a 3 MB pattern
takes a third of a second; 4,096 characters take well under a millisecond."""
COMPILED_KEPT = 32
"""How many compiled patterns are kept for reuse: a client that waits again with the same pattern
(the usual way to follow a task) pays for compiling it once."""


@dataclass(frozen=True)
class ClientPattern:
    """A client's pattern, compiled once for both ways of matching a log."""

    pattern: str
    """The pattern as the client wrote it."""
    regexp: re2._Regexp[str]
    prefilter: Prefilter | None
    """The same regexp as a prefilter for blocks of lines (see :func:`line_prefilter`), if it can be one."""

    def search(self, text: str) -> Found | None:
        return self.regexp.search(text)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        """Pickled as its text (a compiled RE2 pattern cannot be): compiled again, once, by a
        matching process (logs/matching.py)."""
        return _compile, (self.pattern,)


def line_prefilter(pattern: Pattern) -> Prefilter | None:
    """``pattern`` made to look through many lines at once, for finding candidate lines fast, or None
    when it cannot stand in for matching line by line.

    In multi-line mode, with RE2 never matching a newline, a line that ``pattern`` matches on its
    own holds a match of the prefilter: ``^`` and ``$`` match at each line's ends, and no match
    reaches from one line into the next. So a block of lines is searched in one call in C, and
    only the lines found are matched one by one (which keeps the answer exact). Patterns that
    anchor at the ends of the whole text, and patterns that match the empty string (every line
    would be a candidate), get no prefilter."""
    return pattern.prefilter if isinstance(pattern, ClientPattern) else None


def _options(*, never_nl: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the error goes to the client, not to the server's stderr
    options.max_mem = MAX_PATTERN_MEMORY
    options.never_nl = never_nl
    return options


@functools.lru_cache(maxsize=COMPILED_KEPT)
def _compile(text: str) -> ClientPattern:
    """``text`` compiled once. On a line (which holds no newline) the multi-line form matches
    exactly what ``text`` does, so where it can be a prefilter it serves for both."""
    if _WHOLE_TEXT_ANCHOR.search(text):
        return ClientPattern(text, re2.compile(text, _options()), None)
    try:
        regexp = re2.compile(f"(?m){text}", _options(never_nl=True))
    except re2.error:
        re2.compile(text, _options())  # the error, as it reads without the prefix
        raise
    return ClientPattern(text, regexp, None if regexp.search(b"") is not None else regexp)


_TOO_LARGE = (
    f"this pattern compiles to more than RE2's {MAX_PATTERN_MEMORY >> 20} MiB budget per pattern; use smaller "
    "repetition counts (x{20} instead of x{300}) or ASCII classes (\\w, [a-z]) instead of Unicode ones (\\pL)"
)


def error_text(exc: re2.error) -> str:
    """What RE2 says is wrong with a pattern."""
    return exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)


def owner_pattern(text: str) -> Pattern:
    """A pattern from the server's owner (``deny_commands`` in config.toml), compiled by RE2 like
    a client's: it is matched against what clients send, so in linear time too.

    Raises:
        re2.error: it is not valid RE2 syntax, or compiles past RE2's budget.
    """
    return ClientPattern(text, re2.compile(text, _options()), None)


def compiled(field: str, text: str | None) -> Pattern | None:
    """``text`` compiled by RE2, or a one-line error naming ``field`` that says what to write instead."""
    if text is None:
        return None
    if not text:
        raise InvalidArgumentError(field, text, "give a regular expression, or omit it")
    if len(text) > MAX_PATTERN_CHARACTERS:
        raise InvalidArgumentError(
            field, text, f"patterns are at most {MAX_PATTERN_CHARACTERS} characters; match a shorter part of the line"
        )
    try:
        return _compile(text)
    except re2.error as exc:
        reason = error_text(exc)
        if "too large" in reason:
            raise InvalidArgumentError(field, text, _TOO_LARGE) from exc
        advice = (
            f"not a valid pattern in {PATTERN_LIMIT_NOTE}: {reason}; rewrite it without those "
            f"(\\z for end of text), or escape special characters; see {SYNTAX_URL}"
        )
        raise InvalidArgumentError(field, text, advice) from exc
