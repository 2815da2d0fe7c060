"""The file the server's helper processes (capping, matching) have for their stderr.

A helper given the server's own stderr holds its client's pipe open: the capping process outlives
a server that dies, for as long as that server's tasks run (logs/capping.py), and a client that
waits for the server's stderr to close (Node's child_process 'close' event, `mcp-backgroundr |
cut`) waited as long, hours with a dev server running. So a helper writes what it has to say (a
traceback, should it fail) to the helpers' log in the state directory (``Settings.helpers_log``),
and the server's warning that a helper ended names that file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

KEPT_BYTES = 1 << 20
"""Past this size the helpers' log is begun again when the next helper starts: it keeps the latest
failures, not every one since the state directory was made."""
FILE_MODE = 0o600


def stderr_for_helper(path: Path | None) -> int:
    """A descriptor to hand a helper process as its stderr (the caller closes it once the helper has
    started): ``path``, appended to, or /dev/null without one or when it cannot be opened. Blocking."""
    if path is not None:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError:  # nowhere to keep what it says; it still must not have the server's stderr
            pass
        else:
            with contextlib.suppress(OSError):
                if os.fstat(descriptor).st_size > KEPT_BYTES:
                    os.ftruncate(descriptor, 0)
            return descriptor
    return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def where_said(path: Path | None) -> str:
    """The end of a warning that a helper ended: where what it said before it did is."""
    return f" (anything it said is in {path})" if path is not None else ""
