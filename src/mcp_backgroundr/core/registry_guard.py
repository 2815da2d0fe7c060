"""A registry deleted under a live server is written back at once.

Deleting the SQLite file while a server holds it open goes unnoticed by SQLite: the
server keeps writing to a file no one else can open, and the CLI and the next server
find no task at all. The server watches the state directory for removed entries
(inotify, no polling) and, when the registry file is gone or replaced, writes every
record it still reads back to the path.
"""

from __future__ import annotations

from .. import offload
from ..errors import RegistryError
from ..platform.inotify import ENTRY_REMOVED, WriteWatches
from ..store.registry import Registry
from .watchers import report


async def restore(registry: Registry) -> None:
    """Write the registry back if its file was deleted or replaced (reported on stderr), in a
    worker thread: the writes may wait for another process's lock."""
    try:
        restored = await offload.run(offload.REGISTRY, registry.restore)
    except RegistryError as exc:
        report("server", f"the task registry file was deleted and could not be written back: {exc}")
        return
    if restored is not None:
        report("server", f"the task registry {registry.path} was deleted; wrote its {restored} record(s) back")


async def keep_registry(registry: Registry, watches: WriteWatches) -> None:
    """Until cancelled: whenever an entry leaves the registry's directory, check the registry."""
    with watches.watching(registry.path.parent, ENTRY_REMOVED) as removals:
        await restore(registry)  # it may have gone before the watch was set
        while True:
            await removals.wait()
            await restore(registry)
