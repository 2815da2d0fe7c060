"""Room on the registry's disk kept for a server's last writes.

A server records what its tasks did while it runs; on a full disk the changes it could not write
are kept in memory and written once there is space (see ``Registry.update_soon``). When it exits
before then, they would be lost: an exit code the next server can only call unknown. So a server
keeps a file of RESERVE_BYTES beside the registry, allocated while there is room, and deletes it
to make room for those last writes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

RESERVE_NAME = "registry.reserve"
RESERVE_BYTES = 256 * 1024
"""Room for the last writes: a few WAL frames (4 KiB pages) for each of many changed records."""
RESERVE_MODE = 0o600


class Reserve:
    """The reserve file in a state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RESERVE_NAME

    def keep(self) -> bool:
        """Allocate the reserve if it is not there yet (blocking: a file's blocks are written);
        False when there is no room for it (it is then tried again by the next call)."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_size >= RESERVE_BYTES:
                return True
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT, RESERVE_MODE)
            try:
                os.posix_fallocate(descriptor, 0, RESERVE_BYTES)
            finally:
                os.close(descriptor)
        except OSError:  # no room (ENOSPC), or a state directory not writable
            self.release()
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve, freeing its room; whether there was one."""
        try:
            os.unlink(self.path)
        except OSError:
            return False
        return True
