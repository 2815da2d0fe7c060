"""How a process ended, in the words the registry and the answers use.

Every wait status maps to a result: an exit code gives ``completed`` (0) or ``failed``;
a signal N gives ``failed``, ``exit_code`` 128+N (what a shell reports) and the signal's
name; a run that ended after it was asked to end is ``killed``, however it ended.
Real-time signals have no name of their own: they are named from ``SIGRTMIN``
(``SIGRTMIN+6``) where the platform defines it, and any other number the platform does
not name is ``SIG<N>``. Nothing here raises, whatever the number.

Standard library only: the runner (``python -I runner.py``) loads it too.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

COMPLETED = "completed"
FAILED = "failed"
KILLED = "killed"
SIGNAL_EXIT_BASE = 128
"""A shell reports death by signal N as exit status 128+N."""


@dataclass(frozen=True)
class Exit:
    """How one run ended."""

    state: str
    """completed, failed, or killed (it was asked to end)."""
    exit_code: int
    signal: str | None


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGRTMIN+6``, or ``SIG<N>`` for a number the platform does not name."""
    low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
    if low is not None and high is not None and low < signum < high:
        return f"SIGRTMIN+{signum - low}"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def of(returncode: int, asked_to_end: bool = False) -> Exit:
    """The result of a ``subprocess`` returncode (negative: killed by that signal); ``killed``
    when somebody had asked the run to end."""
    if returncode >= 0:
        state = KILLED if asked_to_end else COMPLETED if returncode == 0 else FAILED
        return Exit(state, returncode, None)
    return Exit(KILLED if asked_to_end else FAILED, SIGNAL_EXIT_BASE - returncode, signal_name(-returncode))


def describe(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGRTMIN+6``, for a line in a log."""
    if returncode < 0:
        return f"signal {signal_name(-returncode)}"
    return f"exit code {returncode}"
