"""Checks of single fields a caller gives: command, cwd, env, restart, log cap, wait time and port.

Each request puts them together in one place (``core/requests.py``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from ..config import MAX_LOG_CAP, MIN_LOG_CAP
from ..errors import (
    KERNEL_ARGUMENT_BYTES,
    KERNEL_ARGUMENTS_TOTAL_BYTES,
    POINTER_BYTES,
    InvalidArgumentError,
    shortened,
    too_long_for_the_kernel,
)
from ..logs.patterns import Pattern
from ..runner import RESTART_POLICIES, TASK_ENV_DEFAULTS

EXEC_PREFIX_BYTES = len("exec ")
"""What the shell's argument may gain before the command (see ``runner.exec_command``)."""


def shell_command(command: str | list[str]) -> str:
    """``command`` as one shell command: a list (argv) is quoted with ``shlex.join``."""
    if isinstance(command, str):
        return command
    if not command:
        raise InvalidArgumentError("command", command, 'give the program and its arguments, e.g. ["npm", "run", "dev"]')
    checked_word_count(len(command))
    return shlex.join(command)


def checked_word_count(words: int) -> None:
    """Refuse an argv of ``words`` words by its length alone: joined, it is one argument of the shell."""
    if 2 * words - 1 > KERNEL_ARGUMENT_BYTES - 1 - EXEC_PREFIX_BYTES:  # a word and a space, at least
        raise too_long_for_the_kernel(f"the command ({words} words)")


def _bytes_over_the_kernel(text: str, extra: int = 0) -> int | None:
    """How many bytes ``text`` (plus ``extra`` of its argument) has when that is more than the
    kernel takes in one argument or environment string; None when it fits. A length check, in C:
    the kernel refuses a longer one anyway, after every word of it would have been read."""
    room = KERNEL_ARGUMENT_BYTES - 1 - extra  # the string's closing NUL
    if len(text) <= room // 4:  # a character is at most 4 bytes in UTF-8
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > room else None


def checked_command(command: str) -> str:
    if not command.strip():
        raise InvalidArgumentError("command", command, "give a shell command to run, such as 'npm run dev'")
    if (size := _bytes_over_the_kernel(command, EXEC_PREFIX_BYTES)) is not None:
        raise too_long_for_the_kernel(f"the command ({size} bytes)")
    if "\0" in command:
        raise InvalidArgumentError("command", command, "remove the NUL character; a command cannot contain one")
    return command


def checked_cwd(cwd: str | None) -> str:
    """The directory a task runs in: ``cwd`` (``~`` expanded), a relative one taken from the
    server's working directory, as the default is; a refusal of a relative one names that
    directory (a client's "relative/dir" means its project, which need not be the server's)."""
    if cwd is None or not cwd.strip():
        return os.getcwd()
    if "\0" in cwd:
        raise InvalidArgumentError("cwd", cwd, "remove the NUL character from the path")
    path = Path(cwd).expanduser()
    base = "" if path.is_absolute() else os.getcwd()
    path = Path(base) / path
    taken = f" (a relative cwd is taken from the server's working directory, {base})" if base else ""
    try:
        path.stat()
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            advice = f"it cannot be used ({exc.strerror}){taken}; pass another directory"
            raise InvalidArgumentError("cwd", cwd, advice) from exc
    if not path.exists():
        other = "an absolute path to an existing directory" if base else "an existing directory"
        raise InvalidArgumentError("cwd", cwd, f"that directory does not exist{taken}; pass {other} or omit cwd")
    if not path.is_dir():
        advice = f"that is a file, not a directory{taken}; pass its parent directory or omit cwd"
        raise InvalidArgumentError("cwd", cwd, advice)
    if not os.access(path, os.X_OK):
        advice = f"the server may not enter that directory{taken}; pick one it can read"
        raise InvalidArgumentError("cwd", cwd, advice)
    return os.path.normpath(path)


ENV_ENTRY_BYTES = POINTER_BYTES + len("=\0")
"""What each variable takes of the kernel's room besides its name and value: its pointer, the
``=`` and the closing NUL."""
ENV_ADVICE = "pass fewer or shorter variables, or put them in a file the command reads"


def checked_env(extra: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The variables a caller adds to a task's environment (None: unset it).

    Refused by their count, then by their total size, before any is looked at: the kernel takes
    at most ARG_MAX bytes of arguments and environment together. The rest is screened with joins
    and searches (in C); only when the screen finds something are the variables read one by one,
    to name the one at fault. Read one by one on the event loop, 200,000 variables held every
    client about 0.3 s before the kernel refused them anyway."""
    if not extra:
        return {}
    checked_variable_count(len(extra))
    names, values = "\0".join(extra), "".join(filter(None, extra.values()))
    # Each separator of the names is one byte, as each variable's "=" is: ENV_ENTRY_BYTES counts those.
    size = _utf8_bytes(names) - (len(extra) - 1) + _utf8_bytes(values) + len(extra) * ENV_ENTRY_BYTES
    if size > KERNEL_ARGUMENTS_TOTAL_BYTES:
        raise too_long_for_the_kernel(f"env ({len(extra)} variables, {size} bytes)", ENV_ADVICE)
    longest = max(map(len, extra)) + max(map(len, filter(None, extra.values())), default=0)
    flawed = "" in extra or "=" in names or names.count("\0") != len(extra) - 1 or "\0" in values
    if flawed or longest + 1 > (KERNEL_ARGUMENT_BYTES - 1) // 4:
        _name_the_flawed_variable(extra)
    return dict(extra)


def checked_variable_count(variables: int) -> None:
    """Refuse ``variables`` variables by their count alone."""
    if variables * (ENV_ENTRY_BYTES + 1) > KERNEL_ARGUMENTS_TOTAL_BYTES:  # a name has a character at least
        raise too_long_for_the_kernel(f"env ({variables} variables)", ENV_ADVICE)


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _name_the_flawed_variable(extra: Mapping[str, str | None]) -> None:
    """Raise for the first variable the kernel would not take (a walk, bounded by the count check)."""
    for key, value in extra.items():
        if not key or "=" in key or "\0" in key:
            raise InvalidArgumentError("env", key, "variable names must be non-empty without '=' or NUL")
        if value is not None and "\0" in value:
            raise InvalidArgumentError(f"env.{key}", value, "remove the NUL character from the value")
        if value is not None and (size := _bytes_over_the_kernel(f"{key}={value}")) is not None:
            raise too_long_for_the_kernel(f"env value {shortened(key, 40)} ({size} bytes with its name)")


def task_environment(inherited: Mapping[str, str], extra: Mapping[str, str | None]) -> dict[str, str]:
    """``inherited`` (what the policy passes on of the server's environment) with ``extra`` over it;
    a variable whose value in ``extra`` is None is unset (merged in C; walked only when one is)."""
    env: dict[str, str | None] = {**TASK_ENV_DEFAULTS, **inherited, **extra}
    if None in extra.values():
        return {key: value for key, value in env.items() if value is not None}
    return cast("dict[str, str]", env)


MAX_RESTARTS_LIMIT = 10_000


def checked_restart(restart: str, max_restarts: int | None, default: int) -> int:
    """Validate a restart policy; return how many restarts it allows."""
    if restart not in RESTART_POLICIES:
        raise InvalidArgumentError("restart", restart, "use no, on-failure or always")
    if max_restarts is None:
        return 0 if restart == "no" else default
    if not 0 <= max_restarts <= MAX_RESTARTS_LIMIT:
        raise InvalidArgumentError("max_restarts", max_restarts, f"use 0 to {MAX_RESTARTS_LIMIT}")
    if restart == "no" and max_restarts:
        raise InvalidArgumentError("max_restarts", max_restarts, "it needs restart=on-failure or restart=always")
    return max_restarts


def checked_log_cap(max_log_bytes: int | None, default: int) -> int:
    """Validate a per-task log cap; return the cap to use."""
    if max_log_bytes is None:
        return default
    if not MIN_LOG_CAP <= max_log_bytes <= MAX_LOG_CAP:
        raise InvalidArgumentError(
            "max_log_bytes", max_log_bytes, f"use {MIN_LOG_CAP} (64 KiB) to {MAX_LOG_CAP} (1 TiB) bytes"
        )
    return max_log_bytes


MAX_PORT = 65_535


@dataclass(frozen=True)
class WaitConditions:
    """What a wait waits for, checked: besides the exit, which always ends it."""

    timeout: float
    pattern: Pattern | None
    port: int | None
    pattern_field: str = "output_pattern"
    """How the caller named the pattern (for an error about it found later, on a remote host)."""


def checked_timeout(field: str, seconds: float, max_seconds: float) -> float:
    """A wait's longest time, in seconds."""
    if not 0 <= seconds <= max_seconds:
        raise InvalidArgumentError(field, seconds, f"use 0 to {max_seconds:g} seconds")
    return seconds


def checked_port(field: str, port: int | None) -> int | None:
    """A TCP port to wait for, if any."""
    if port is not None and not 1 <= port <= MAX_PORT:
        raise InvalidArgumentError(field, port, f"use a TCP port from 1 to {MAX_PORT}")
    return port
