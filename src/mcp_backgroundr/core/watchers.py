"""Background work of one task that fails alone.

Each task has coroutines working for it in the supervisor's task group: the exit watcher,
the terminal copier, the runtime limit, the watcher of another server's task. An exception
escaping one of them would cancel the whole group, and with it the server and every task.
:func:`contained` runs such work so that its failure is reported on stderr and recorded on
its task instead, and the server goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..errors import BackgroundrError, warn


def failure_text(exc: BaseException) -> str:
    """One line naming what went wrong: ``No space left on device``, ``ValueError: ...``, or our own
    error's line as written for its reader (``host devbox: no answer within 13 s; ...``)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, BackgroundrError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def report(label: str, note: str) -> None:
    """A line on the server's stderr (the client's log of the server)."""
    warn(f"{label}: {note}")


async def contained(
    label: str, what: str, work: Callable[[], Awaitable[None]], record: Callable[[str], None] | None = None
) -> None:
    """Run ``work``; if it fails, report ``what`` failed (under ``label``, e.g. the task) and
    hand the note to ``record``. Cancellation passes through untouched."""
    try:
        await work()
    except Exception as exc:  # one task's failure must never end the server
        note = f"{what} failed: {failure_text(exc)}"
        report(label, note)
        if record is not None:
            try:
                record(note)
            except Exception as again:
                report(label, f"could not record that: {failure_text(again)}")
