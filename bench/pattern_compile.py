"""How long compiling a client's pattern holds the interpreter lock (and so the event loop).

RE2 matches in linear time, but compiles holding the lock, and a short pattern can make a large
program (``\\pL{300}``: every range of Unicode letters, 300 times). The server gives RE2 a memory
budget per pattern (``patterns.MAX_PATTERN_MEMORY``) that refuses such programs. For each kind of
costly pattern this finds the longest repetition the budget accepts and times compiling it, and the
shortest it refuses, as a ratio to compiling a usual log pattern; then the same costliest pattern
under RE2's own default budget of 8 MiB (what the server used before).
"""

from __future__ import annotations

import contextlib
import itertools
import time

import re2
from _harness import Figure, main, median, ms

from mcp_backgroundr.errors import InvalidArgumentError
from mcp_backgroundr.logs import patterns

NAME = "pattern_compile"
USUAL = r"(?i)(error|warn(ing)?|fatal|exception)"
COSTLY_ATOMS = (r"\pL", r"(?i)\pL", r"[\pL\pN]", r"(?:\pL|\pN|\pP)", r"\p{Han}", r"\w", r".")
RE2_DEFAULT_MEMORY = 8 << 20
_unique = itertools.count()


def _fresh(text: str) -> str:
    """``text`` made new to both compile caches (RE2's and the server's), matching the same lines."""
    return f"{text}(?:Q{next(_unique)})?"


def _shown(pattern: str) -> str:
    return pattern.replace("|", "\\|")  # in a Markdown table


def _seconds_to_compile(text: str, repeat: int) -> float:
    """Median time of ``repeat`` compiles the way the server compiles a client's pattern (accepted or refused)."""
    times = []
    for _ in range(repeat):
        begun = time.perf_counter()
        with contextlib.suppress(InvalidArgumentError):
            patterns.compiled("grep", _fresh(text))
        times.append(time.perf_counter() - begun)
    return median(times)


def _accepted(text: str) -> bool:
    try:
        patterns.compiled("grep", _fresh(text))
    except InvalidArgumentError:
        return False
    return True


def _longest_accepted(atom: str) -> int:
    low, high = 1, 1000  # RE2 takes no repetition count over 1000
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _accepted(f"{atom}{{{middle}}}") else (low, middle - 1)
    return low


def _under_re2_default(text: str, repeat: int) -> float:
    options = re2.Options()
    options.max_mem = RE2_DEFAULT_MEMORY
    options.never_nl = True
    times = []
    for _ in range(repeat):
        begun = time.perf_counter()
        re2.compile(f"(?m){_fresh(text)}", options)
        times.append(time.perf_counter() - begun)
    return median(times)


async def measure(quick: bool) -> list[Figure]:
    repeat = 3 if quick else 7
    usual = _seconds_to_compile(USUAL, repeat)
    figures = [Figure(NAME, "usual log pattern (baseline)", f"{ms(usual)} {_shown(USUAL)}")]
    worst = 0.0
    for atom in COSTLY_ATOMS:
        longest = _longest_accepted(atom)
        accepted = _seconds_to_compile(f"{atom}{{{longest}}}", repeat)
        refused = _seconds_to_compile(f"{atom}{{{longest + 1}}}", repeat) if longest < 1000 else 0.0
        worst = max(worst, accepted, refused)
        figures.append(
            Figure(NAME, f"{_shown(atom)}{{N}}: longest accepted N={longest}",
                   f"accepted {ms(accepted)} ({accepted / usual:.0f}x), refused at N+1 {ms(refused)}")
        )  # fmt: skip
    before = _under_re2_default(r"\pL{300}", repeat)
    figures += [
        Figure(NAME, "costliest compile, accepted or refused", f"{ms(worst)} ({worst / usual:.0f}x the usual one)",
               "<= 50 ms (issue 10: p99 within 50 ms of idle)", worst <= 0.05),
        Figure(NAME, "\\pL{300} under RE2's default 8 MiB (before)", f"{ms(before)} ({before / usual:.0f}x)"),
    ]  # fmt: skip
    return figures


if __name__ == "__main__":
    main(measure)
