"""Errors raised by mcp-backgroundr.

Every error is written for a reader who can act on it: what was wrong, which
value, and what to do instead. The tool layer turns them into one-line
``isError`` answers; the CLI prints them as one line and exits non-zero.

    BackgroundrError
    ├── TaskNotFoundError      no task has that id
    ├── InvalidArgumentError   a field has a value we cannot use
    ├── SpawnFailedError       the command could not be started
    ├── PolicyRefusedError     the server's policy (config.toml or flags) forbids it
    ├── RegistryError          the SQLite registry could not be read or written
    │   └── RegistryFullError  ... because its disk is full
    └── HostUnreachableError   a remote host could not be reached, or refused the connection
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""What must not reach an answer's line or a terminal as it is: C0 and C1 controls and DEL (line
breaks, ESC, BEL, backspace), the line and paragraph separators, and the bidirectional controls
(U+202E shows the rest of a line reversed)."""
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    if (named := _NAMED_ESCAPES.get(char)) is not None:
        return named
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as its escape (``\\n``, ``\\x1b``, ``\\u202e``):
    a client's text (a name, a command, a directory, a host) can neither add a line to an answer
    or a table nor act on the terminal that shows it. Every such text a person or a model reads
    goes through here."""
    return _CONTROLS.sub(_escaped, text) if _CONTROLS.search(text) else text


def first_control(text: str) -> str | None:
    """The first character of ``text`` that :func:`printable` would escape, if any."""
    found = _CONTROLS.search(text)
    return found.group() if found else None


def warn(line: str) -> None:
    """Say ``line`` on stderr, one line after the program's name, its control characters escaped."""
    print(f"mcp-backgroundr: {printable(line)}", file=sys.stderr, flush=True)


def shortened(text: str, length: int) -> str:
    """``text``, cut to ``length`` characters with "..." when longer: every cut of a shown value or
    command is this one."""
    return text if len(text) <= length else text[: length - 3] + "..."


def shown_value(value: object, width: int = 80) -> str:
    """A value as JSON (``null``, ``true``, ``"text"``), cut to ``width`` characters for an error line;
    a whole number as the client wrote it (``-1``, where validation made it ``-1.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        value = int(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = str(value)
    return shortened(printable(text), width)


def json_value(value: object) -> str:
    """``value`` as JSON a caller can pass back as it is (a pattern in advice to call again): whole,
    never cut, its control characters (those :func:`printable` escapes) as JSON escapes."""
    text = json.dumps(value, ensure_ascii=False)
    return _CONTROLS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def plain_number(value: float) -> str:
    """A number as a person writes it: ``2147483648`` and ``1000000``, not ``2.14748e+09`` or
    ``1e+06`` (what ``:g`` makes of them); a fraction keeps its digits (``0.5``)."""
    if isinstance(value, int):  # whole: every digit (a float keeps 15 or 16 of them)
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e18 else repr(number)


class BackgroundrError(Exception):
    """Root of every error this package raises on purpose."""


class TaskNotFoundError(BackgroundrError):
    """No task with the given id is known."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"task_id {shown_value(task_id)} is not a known task; call list_tasks to see the ids you can use"
        )
        self.task_id = task_id


class InvalidArgumentError(BackgroundrError):
    """A field was given a value that cannot be used."""

    def __init__(self, field: str, value: object, advice: str) -> None:
        super().__init__(f"{field}={shown_value(value)} is invalid: {advice}")
        self.field = field


class SpawnFailedError(BackgroundrError):
    """The operating system refused to start the command."""


KERNEL_ARGUMENT_BYTES = 128 * 1024
"""The longest argument or environment string Linux takes, its closing NUL included (MAX_ARG_STRLEN)."""


def _arguments_total_bytes() -> int:
    try:
        return max(os.sysconf("SC_ARG_MAX"), KERNEL_ARGUMENT_BYTES)
    except (ValueError, OSError):
        return 2 * 1024 * 1024


KERNEL_ARGUMENTS_TOTAL_BYTES = _arguments_total_bytes()
"""What the arguments and the environment of a new program may take together, their strings and
the pointers to them (ARG_MAX: a quarter of the stack limit, 2 MiB by default)."""
POINTER_BYTES = struct.calcsize("P")
"""What each argument and environment string takes of that room besides its own bytes."""
LONG_SCRIPT_ADVICE = "put a long script in a file and run that"


def too_long_for_the_kernel(
    what: str = "the command or an env value", advice: str = LONG_SCRIPT_ADVICE
) -> SpawnFailedError:
    """The one line for a start the kernel refuses (E2BIG) or would refuse: ``what`` is too long."""
    return SpawnFailedError(
        f"could not start the command: {what} is too long for the kernel "
        f"(at most 128 KiB each, about 2 MiB together); {advice}"
    )


class PolicyRefusedError(BackgroundrError):
    """The server's policy forbids the request; the message names the rule."""

    def __init__(self, rule: str, what: str, advice: str) -> None:
        super().__init__(f"refused by policy rule {rule}: {what}; {advice}")
        self.rule = rule


class RegistryError(BackgroundrError):
    """The task registry could not be read or written."""


class RegistryFullError(RegistryError):
    """The task registry could not be written because its disk (or the user's quota) is full."""


class HostUnreachableError(BackgroundrError):
    """A task's remote host did not answer, or ssh refused to connect to it."""

    def __init__(self, host: str, what: str, *, reachable: bool = False, sent: bool = True) -> None:
        super().__init__(f"host {host}: {what}")
        self.host = host
        self.what = what
        self.reachable = reachable
        """True when the host answered but refused (host key, authentication)."""
        self.sent = sent
        """False when the request surely never reached the host (no connection, no agent); True
        when it may have: it went out and no answer came back, so what it did there is unknown."""

    def then(self, outcome: str) -> HostUnreachableError:
        """This failure, saying what it means for the call's task (``outcome``: what is known)."""
        return HostUnreachableError(self.host, f"{self.what}; {outcome}", reachable=self.reachable, sent=self.sent)
