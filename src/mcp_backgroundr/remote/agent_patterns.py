"""On the remote host: an RE2 pattern, checked by the server, made to mean the same to Python's ``re``.

Standard library only. Python's ``re`` reads some RE2 syntax otherwise, silently (RE2's syntax
page, https://github.com/google/re2/wiki/Syntax, against Python's):

- POSIX classes: ``[[:digit:]]`` is an ASCII class to RE2, a set of ``[:digt`` then ``]`` to Python;
  translated into the ranges they stand for (``[:^name:]``, negated, only as a class of its own).
- ``\\d``, ``\\w``, ``\\s`` (and ``\\D``, ``\\W``, ``\\S``) are ASCII to RE2 (``\\s``: tab, newline,
  form feed, carriage return, space) and Unicode to Python; translated into their ASCII ranges.
- ``\\z``, RE2's end of text, is ``\\Z`` to Python; ``\\Z`` is not RE2 syntax.
- ``\\Q...\\E`` (a literal) is an error to Python: translated into the escaped text.
- ``\\x{10FFFF}`` (a code point) is an error to Python: translated into ``\\U0010FFFF``.

Others are refused by Python itself with an error, and so by the agent: ``\\pN``, ``\\p{Greek}``
and ``\\PN`` (Unicode classes), ``\\C`` (any byte), ``(?U)`` (ungreedy), ``(?<name>...)`` before
Python 3.11's ``(?P<name>``. ``\\b`` and ``\\B`` stay Unicode word boundaries in Python (ASCII in
RE2): they differ only next to a non-ASCII letter or digit.
"""

from __future__ import annotations

import re

UNTRANSLATED = "on a remote host use ASCII classes ([0-9], [a-z]) instead of Unicode ones (\\pL), and no \\C or (?U)"
_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\x0b\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
"""RE2's POSIX classes, as the ranges of a Python class."""
_PERL = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
"""RE2's Perl classes (ASCII), as the ranges of a Python class."""
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_CODE_POINT = re.compile(r"\\x\{([0-9A-Fa-f]+)\}")


def as_python(pattern: str) -> str:
    """``pattern`` (RE2) as Python's ``re`` must read it to match what RE2 matches.

    Raises:
        ValueError: a construct with no translation (a negated POSIX class inside a larger class).
    """
    out: list[str] = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            piece, at = _escape(pattern, at, in_class=False)
            out.append(piece)
        elif char == "[":
            piece, at = _class(pattern, at)
            out.append(piece)
        else:
            out.append(char)
            at += 1
    return "".join(out)


def _escape(pattern: str, at: int, *, in_class: bool) -> tuple[str, int]:
    """The escape at ``at`` (a backslash) translated, and where the text after it starts."""
    letter = pattern[at + 1 : at + 2]
    if letter == "Q":
        end = pattern.find("\\E", at + 2)
        literal = pattern[at + 2 :] if end < 0 else pattern[at + 2 : end]
        return re.escape(literal), len(pattern) if end < 0 else end + 2
    if (point := _CODE_POINT.match(pattern, at)) is not None:
        return f"\\U{int(point.group(1), 16):08x}", point.end()
    if letter.lower() in _PERL:
        ranges = _PERL[letter.lower()]
        if not letter.isupper():
            return (ranges if in_class else f"[{ranges}]"), at + 2
        if in_class:
            raise ValueError(f"\\{letter} inside a class has no translation; write the class without it")
        return f"[^{ranges}]", at + 2
    if letter == "z" and not in_class:
        return "\\Z", at + 2
    return pattern[at : at + 2], at + 2


def _class(pattern: str, at: int) -> tuple[str, int]:
    """The bracketed class at ``at`` translated, and where the text after it starts."""
    out = ["["]
    at += 1
    if pattern[at : at + 1] == "^":
        out.append("^")
        at += 1
    if pattern[at : at + 1] == "]":  # a ] first is a literal one
        out.append("\\]")
        at += 1
    while at < len(pattern) and pattern[at] != "]":
        if (posix := _POSIX_CLASS.match(pattern, at)) is not None:
            negated, name = posix.groups()
            if name not in _POSIX:
                raise ValueError(f"[:{name}:] is not a POSIX class")
            if negated:
                if out != ["["] or pattern[posix.end() : posix.end() + 1] != "]":
                    raise ValueError(f"[:^{name}:] has no translation inside a larger class; write it alone")
                return f"[^{_POSIX[name]}]", posix.end() + 1
            out.append(_POSIX[name])
            at = posix.end()
        elif pattern[at] == "\\":
            piece, at = _escape(pattern, at, in_class=True)
            out.append(piece)
        elif pattern[at] == "[":  # a literal [ in a class
            out.append("\\[")
            at += 1
        else:
            out.append(pattern[at])
            at += 1
    out.append("]")
    return "".join(out), at + 1
