"""A full disk on demand: for the tests that run on the ``small_disk`` fixture's tmpfs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fill_disk(directory: Path) -> Path:
    """Fill the disk ``directory`` is on with a file, to the last block; deleting the file (the
    answer) frees the disk again."""
    ballast = directory / "ballast"
    descriptor = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1024 * 1024, 4096, 512):
            with contextlib.suppress(OSError):  # ENOSPC: full, to within a chunk
                while True:
                    os.write(descriptor, b"\0" * chunk)
    finally:
        os.close(descriptor)
    return ballast


def free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize
