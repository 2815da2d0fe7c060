"""Finding a task by id: one of this server's, or a view of another server's from the registry.

A view of another server's running task watches that task's process, so a wait on it ends
when it does; its record is read afresh at every lookup.
"""

from __future__ import annotations

import functools

import anyio

from .. import offload
from ..errors import TaskNotFoundError
from ..models import TaskRecord, TaskState
from ..platform import process
from ..store import orphans
from .recording import refresh
from .state import CoreState
from .task import Task

FOREIGN_RECORD_WAIT_SECONDS = 2.0
FOREIGN_RECORD_POLL_SECONDS = 0.05


async def find_task(state: CoreState, task_id: str) -> Task:
    """One of our tasks, or a view of another server's task from the registry (read in a worker
    thread: a read waits for the registry's read lock while a whole-registry read holds it)."""
    own = state.own.get(task_id)
    if own is not None:
        await refresh(state, own)
        return own
    record = await read_record(state, task_id)
    if record is None:
        raise TaskNotFoundError(task_id)
    record = await as_it_stands(record)  # its server may be gone
    view = state.views.get(task_id)
    if view is None:
        view = state.views[task_id] = Task(record, None)
        if record.state is TaskState.RUNNING and state.group is not None:
            state.place_of(record).watch_view(view)
    view.record = record
    if not view.running:
        view.exited.set()
    return view


async def read_record(state: CoreState, task_id: str) -> TaskRecord | None:
    """A task's record as the registry holds it, read in a worker thread."""
    return await offload.run(offload.REGISTRY, state.registry.get, task_id)


async def owner_gone(owner: str) -> bool:
    """Whether the server ``owner`` names is gone (a look at the process table: in a worker thread)."""
    return await offload.run(offload.SCANS, orphans.owner_is_gone, owner)


async def as_it_stands(record: TaskRecord) -> TaskRecord:
    """``record`` as its server would record it now (see :func:`orphans.as_it_stands`: looks at the
    process table and the runner's files, in a worker thread)."""
    return await offload.run(offload.SCANS, orphans.as_it_stands, record)


def is_own(state: CoreState, task_id: str) -> bool:
    return task_id in state.own


def watch_view_here(state: CoreState, view: Task) -> None:
    """Watch the process of another server's running task on this machine, so a wait on it ends
    when it does."""
    if view.record.pid is not None:
        state.in_background(view, "watching another server's task", functools.partial(_watch_view, state, view))


async def _watch_view(state: CoreState, view: Task) -> None:
    """Wait for another server's task to end, then for its owner to record how."""
    assert view.record.pid is not None
    await process.wait_until_ended(view.record.pid, view.record.pid_create_time)
    try:
        # Its owner records the exit as soon as it sees it; across processes there is no event
        # to wait on, so look again briefly (only after an exit, and bounded).
        fresh: TaskRecord | None = None
        with anyio.move_on_after(FOREIGN_RECORD_WAIT_SECONDS):
            while (fresh := await read_record(state, view.record.task_id)) is not None and await _recorded_soon(fresh):  # noqa: ASYNC110
                await anyio.sleep(FOREIGN_RECORD_POLL_SECONDS)
        if fresh is not None:
            view.record = await as_it_stands(fresh)
    finally:
        view.exited.set()  # it ended: a waiter learns so even if its record cannot be read


async def _recorded_soon(record: TaskRecord) -> bool:
    """Whether the record of a task whose process has ended is yet to say so: it is running, and
    its server lives to record that (a server that is gone records nothing: it stands as read)."""
    return record.running and not await owner_gone(record.owner)
