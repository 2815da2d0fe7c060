"""How a process ended, in the words the registry and the answers use.

Every wait status maps to a result: an exit code gives ``completed`` (0) or ``failed``;
a signal N gives ``failed``, ``exit_code`` 128+N (what a shell reports) and the signal's
name. Real-time signals have no name of their own: they are named from ``SIGRTMIN``
(``SIGRTMIN+6``) where the platform defines it, and any other number the platform does
not name is ``SIG<N>``. Nothing here raises, whatever the number.

Standard library only: the runner (``python -I runner.py``) loads it too.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

COMPLETED = "completed"
FAILED = "failed"
SIGNAL_EXIT_BASE = 128
"""A shell reports death by signal N as exit status 128+N."""


@dataclass(frozen=True)
class Exit:
    """How one run ended."""

    state: str
    """completed or failed (whoever asked the process to end may record it killed instead)."""
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


def of(returncode: int) -> Exit:
    """The result of a ``subprocess`` returncode (negative: killed by that signal)."""
    if returncode >= 0:
        return Exit(COMPLETED if returncode == 0 else FAILED, returncode, None)
    return Exit(FAILED, SIGNAL_EXIT_BASE - returncode, signal_name(-returncode))


def describe(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGRTMIN+6``, for a line in a log."""
    if returncode < 0:
        return f"signal {signal_name(-returncode)}"
    return f"exit code {returncode}"
