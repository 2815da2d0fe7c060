"""A server's start-up failures, as one line a person can act on.

The supervisor starts inside an ``AsyncExitStack``: whatever fails undoes what was
already done (tasks adopted, the task group) and surfaces as itself, not as the
exception group of the task group it happened in, nor as anyio's complaint about a
cancel scope left open.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from ..errors import BackgroundrError

_NO_INOTIFY_HINT = (
    "no inotify instance is left for this user ({reason}); raise the limit "
    "(sysctl fs.inotify.max_user_instances) or end programs that watch files, then start again"
)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Turn an ``OSError`` while doing ``what`` into a one-line :class:`BackgroundrError`."""
    try:
        yield
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, str(exc))
        if exc.errno in (errno.EMFILE, errno.ENFILE) and "inotify" in what:
            message = _NO_INOTIFY_HINT.format(reason=f"{reason} while trying to {what}")
        else:
            message = f"could not {what}: {exc.strerror or exc}"
        raise BackgroundrError(f"cannot start: {message}") from exc


def the_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure inside ``group`` (the group itself when there are several)."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    return leaves[0] if len(leaves) == 1 else group
