"""Tasks whose server died without ending them (SIGKILL, a crash, the OOM killer).

Each server records itself as a task's owner: host, pid and the process's start
time. A new server on the same state directory looks for running tasks whose
owner is gone and ends them, so a crash never leaves a dev server holding its
port forever. Owners on other hosts are left alone: their liveness cannot be told
from here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

import psutil

from . import process
from .models import TaskRecord, TaskState

# psutil derives start times from clock ticks: equal within this, they are the same process.
START_TIME_TOLERANCE = 0.05

ENDED_REASON = "its server exited without ending it (crash or SIGKILL); ended when the next server started"
VANISHED_REASON = "its server exited without ending it (crash or SIGKILL); it ended unobserved, exit status unknown"
LINGERING_ENDED_REASON = "exited; processes it left behind outlived its server and were ended by the next server"
SETTLED_REASON = "exited"


def owner_id() -> str:
    """This server's owner id: host, pid and process start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


def same_process(pid: int, create_time: float | None) -> bool:
    """Whether ``pid`` still names the process that started at ``create_time``."""
    started = process.create_time(pid)
    return started is not None and create_time is not None and abs(started - create_time) < START_TIME_TOLERANCE


def owner_is_gone(owner: str) -> bool:
    """True when the owner ran on this host and its process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname():
        return False
    try:
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return False  # not an id this version wrote: leave it alone
    return not same_process(pid, started)


def orphaned(records: Sequence[TaskRecord], own: str) -> list[TaskRecord]:
    """Tasks of dead servers on this host that may still have processes: running ones, and
    finished ones not yet settled (their daemonized children may live on)."""
    return [
        r
        for r in records
        if (r.state is TaskState.RUNNING or r.end_reason is None) and r.owner != own and owner_is_gone(r.owner)
    ]


async def end_orphans(orphans: Sequence[TaskRecord], grace_seconds: float, kill_wait_seconds: float) -> None:
    """End every process of the orphaned tasks and record how each one ended."""
    leaders: dict[int, process.Leader] = {}
    for record in orphans:
        if record.pid is not None:
            alive = same_process(record.pid, record.pid_create_time)
            # A dead leader's pid may be reused: then only the environment marker counts.
            leaders[record.pid] = process.Leader(record.task_id, None if alive else record.started_at)
    found = process.find_task_processes(leaders) if leaders else {}

    def still_there() -> list[psutil.Process]:
        return [p for group in process.find_task_processes(leaders).values() for p in group] if leaders else []

    await process.end_processes(still_there, grace_seconds, kill_wait_seconds)
    now = time.time()
    for record in orphans:
        had_processes = bool(found.get(record.task_id))
        if record.state is not TaskState.RUNNING:
            record.end_reason = LINGERING_ENDED_REASON if had_processes else SETTLED_REASON
            continue
        record.state = TaskState.KILLED if had_processes else TaskState.FAILED
        record.kill_requested = had_processes
        record.end_reason = ENDED_REASON if had_processes else VANISHED_REASON
        record.ended_at = now
