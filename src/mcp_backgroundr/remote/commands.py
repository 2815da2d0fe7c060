"""The human commands (status, logs [-f], stop) for a task on another host.

They reach the host the way a server does (``RemoteTasks``), and share its connection
when one is open: the control socket lives in the same state directory. A master this
command had to open itself is closed before it returns.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..config import Settings
from ..core.task import Task
from ..core.validation import WaitConditions
from ..models import TaskRecord
from ..results import Ended, Status
from .tasks import RemoteTasks

FOLLOW_WAIT_SECONDS = 60.0
"""logs -f asks the host to answer at the next line or after this long, whichever is first."""
_ANY_LINE = re.compile("")
"""The empty pattern: the host's wait answers at the next line (None would be no pattern)."""


@asynccontextmanager
async def _remote(settings: Settings) -> AsyncIterator[RemoteTasks]:
    remote = RemoteTasks(settings)
    try:
        yield remote
    finally:
        await remote.close(only_started=True)


async def status(settings: Settings, record: TaskRecord) -> Status:
    """The task's status from its host (what is known, when the host cannot be reached)."""
    async with _remote(settings) as remote:
        answer, _ = await remote.status(Task(record, None), 0, None, raw=False)
        return answer


async def logs(settings: Settings, record: TaskRecord, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines, then (``follow``) each new line as the host reports it."""
    task = Task(record, None)
    async with _remote(settings) as remote:
        shown, _ = await remote.status(task, lines, None, raw=True)
        _print(shown.output)
        cursor = shown.cursor
        while follow and task.running and shown.host_reachable is not False:
            await remote.wait(task, WaitConditions(FOLLOW_WAIT_SECONDS, _ANY_LINE, None), cursor, None)
            while True:
                shown, _ = await remote.status(task, 0, cursor, raw=True)
                _print(shown.output)
                if shown.cursor == cursor or not shown.truncated:
                    cursor = shown.cursor
                    break
                cursor = shown.cursor


async def forget(settings: Settings, records: list[TaskRecord]) -> list[str]:
    """Delete the files of pruned remote tasks on their hosts; a line per host whose files were left."""
    async with _remote(settings) as remote:
        return await remote.forget(records)


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def stop(settings: Settings, record: TaskRecord, grace_seconds: float, reason: str) -> Ended:
    """End the task's whole tree on its host; the record says how it ended."""
    async with _remote(settings) as remote:
        ended, _ = await remote.end(Task(record, None), grace_seconds, reason)
        return ended
