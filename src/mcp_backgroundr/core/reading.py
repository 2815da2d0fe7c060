"""Reading a task: its status with a bounded slice of output, a grep of its log, and waits
for its exit, a line or a port."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import psutil

from .. import offload
from ..errors import BackgroundrError, InvalidArgumentError
from ..logs import files
from ..logs.grep import Shown, grep_log_in_thread
from ..logs.matches import grep_notes
from ..models import TaskRecord, WaitReason
from ..platform import backend
from ..platform.scans import PortLook
from ..results import Status, Waited
from . import validation, watch
from .lookup import find_task
from .requests import ReadPlan
from .state import CoreState
from .task import Task

READ_ATTEMPTS = 3
"""How many times a read or a wait is made while ends of what its task left behind overtake it (one
end per limit, so the second is the last one needed)."""
LINGERING_LOOK_SECONDS = 1.0
"""How often a wait for a port looks for new processes of a task that exited and left some running."""
_Answer = TypeVar("_Answer", Status, Waited)


async def read(state: CoreState, task_id: str, plan: ReadPlan) -> Status:
    """Lifecycle and a bounded slice of output of one task: its last lines, what follows a
    cursor, or the lines that match a pattern (of one moment: see :func:`_of_one_moment`)."""
    task = await find_task(state, task_id)
    place = state.place_of(task.record)
    return await _made_of_one_moment(state, task, functools.partial(place.read, task, plan), lambda status: status)


async def _made_of_one_moment(
    state: CoreState, task: Task, make: Callable[[], Awaitable[_Answer]], status_in: Callable[[_Answer], Status]
) -> _Answer:
    """The answer ``make`` makes, whose status shows the task's processes and record of one moment: one
    that an end of the processes the task left behind overtook (they were listed before it, its reason
    is recorded after; or they are gone and the reason is not recorded yet) is made again once that end
    is recorded. Such an end comes after the task's own end, so the answer made again is a quick one."""
    for _ in range(READ_ATTEMPTS - 1):
        recorded = task.leftovers_ends
        answer = await make()
        if _of_one_moment(task, status_in(answer), recorded):
            return answer
        if (ending := task.leftovers_end) is not None:
            with anyio.move_on_after(_end_bound(state)):
                await ending.wait()
    return await make()


def _of_one_moment(task: Task, status: Status, recorded: int) -> bool:
    """Whether ``status`` shows the task's processes and record of one moment: no end of what it left
    behind was recorded (``recorded`` before the read) while it was read, nor is one under way whose
    processes are gone unsaid. Processes not known (its host could not be asked) mix nothing."""
    if status.process_count is None:
        return True
    ending = task.leftovers_end
    return task.leftovers_ends == recorded and (ending is None or bool(status.lingering_pids))


def _end_bound(state: CoreState) -> float:
    """Longest an end of what a task left behind can take (at max_runtime: the default grace), on
    this machine or on its host."""
    settings = state.settings
    return settings.default_grace_seconds + 2 * settings.kill_wait_seconds + settings.remote_call_seconds


async def read_here(state: CoreState, task: Task, plan: ReadPlan) -> Status:
    """A read of a task on this machine: its log is read here, its processes scanned here."""
    if plan.grep is not None:
        return await _grep(state, task, plan)
    as_of = task.snapshot()
    processes = await task.live_processes()
    writer_alive = as_of.running or bool(processes)
    path = Path(task.record.log_path)
    budget = state.settings.output_budget
    if plan.since is None:
        read = functools.partial(files.read_tail, path, plan.lines, budget, writer_alive=writer_alive, raw=plan.raw)
    else:
        read = functools.partial(files.read_forward, path, plan.since, budget, writer_alive=writer_alive, raw=plan.raw)
    piece = await offload.run(offload.LOGS, read)
    return await status_with(state, task, as_of, piece, processes)


async def status_with(
    state: CoreState, task: Task, as_of: TaskRecord, piece: files.OutputSlice, processes: list[psutil.Process]
) -> Status:
    """A task's status ``as_of`` a snapshot taken before ``piece`` of its output was read; what its
    processes use (and its runner's status) is read in a worker thread, their listening sockets
    picked from the shared socket table (the last one read: see ``Sockets.recent``)."""
    processes = await _left_after_its_end(state, task, as_of, processes)
    sockets = (await state.sockets.recent()).sockets if processes else []
    measured, cpu_percent = await task.measured(processes, sockets)
    lingering = [] if as_of.running else sorted(p.pid for p in processes)
    return task.describe(piece, measured.usage, lingering, measured.run, as_of, cpu_percent)


async def _left_after_its_end(
    state: CoreState, task: Task, as_of: TaskRecord, processes: list[psutil.Process]
) -> list[psutil.Process]:
    """The processes a task whose end was asked for (end_background_task, the CLI's stop, another
    server) left behind, looked for again once they have had a moment to die of that end's
    signal: its main process's exit, which the status reports, can come before the rest of the
    tree is gone. Waited for by their exits, until at most kill_wait_seconds after the task's."""
    if as_of.running or not as_of.kill_requested or not processes or as_of.ended_at is None:
        return processes
    moment = as_of.ended_at + state.settings.kill_wait_seconds - time.time()
    if moment <= 0:
        return processes
    await backend.current().wait_until_gone(processes, moment)
    return await task.lingering()


async def _grep(state: CoreState, task: Task, plan: ReadPlan) -> Status:
    """Status whose output is the log lines (from ``plan.since``) matching ``plan.grep``."""
    assert plan.grep is not None
    path = Path(task.record.log_path)
    start = await _checked_since(path, plan.since, default_end=False)
    as_of = task.snapshot()
    shown = Shown(state.settings.output_budget, plan.grep_last, plan.raw)
    found = await grep_log_in_thread(path, plan.grep, start, shown)
    note = grep_notes(found.matches, found.shown, found.resume_at, found.last, found.dropped)
    piece = files.OutputSlice(found.text, found.cursor, found.size, found.shown < found.matches, note, found.dropped)
    if found.gone:
        piece = files.gone(path)
    found_status = await status_with(state, task, as_of, piece, await task.live_processes())
    return dataclasses.replace(found_status, grep_matches=found.matches)


async def wait(
    state: CoreState,
    task_id: str,
    conditions: validation.WaitConditions,
    since: int | None = None,
    progress: watch.ProgressReporter | None = None,
) -> Waited:
    """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""
    task = await find_task(state, task_id)
    place = state.place_of(task.record)
    wait_once = functools.partial(place.wait, task, conditions, since, progress)
    return await _made_of_one_moment(state, task, wait_once, lambda waited: waited.status)


async def wait_here(
    state: CoreState,
    task: Task,
    conditions: validation.WaitConditions,
    since: int | None,
    progress: watch.ProgressReporter | None,
) -> Waited:
    """A wait on a task on this machine: its exit, its log's writes and its ports are watched here."""
    path = Path(task.record.log_path)
    start = await _checked_since(path, since, default_end=True)
    if conditions.pattern is not None and await offload.run(offload.LOGS, files.existing_size, path) is None:
        raise BackgroundrError(files.no_pattern_can_match(task.record.task_id, path))
    began = time.monotonic()

    async def members() -> list[int]:
        return [member.pid for member in await task.live_processes()]

    async def holders(port: int, seen_at: float) -> PortLook:
        return await state.sockets.who_listens(task.record.task_id, port, seen_at, members)

    lingering = functools.partial(_lingering, task)
    outcome = await watch.first_event(
        state.writes_watched, task.exited, path, start, conditions, holders, lingering, progress
    )
    as_of = task.snapshot()
    settings = state.settings
    read = functools.partial(
        files.read_tail, path, settings.max_lines, settings.output_budget, writer_alive=as_of.running, floor=start
    )
    piece = await offload.run(offload.LOGS, read)
    found_status = await status_with(state, task, as_of, piece, await task.live_processes())
    return Waited(
        reason=outcome.reason,
        waited_seconds=round(time.monotonic() - began, 3),
        matched_line=outcome.match.line if outcome.match else None,
        matched_cursor=outcome.match.cursor if outcome.match else None,
        status=found_status,
        advice=_earlier_output_advice(outcome.reason, found_status, start) or _port_advice(conditions, outcome),
    )


async def _lingering(task: Task) -> None:
    """Return once no process the task left running after its exit is left: each is waited for (a pidfd
    on Linux), and the task looked at again every LINGERING_LOOK_SECONDS for ones they started."""
    while processes := await task.lingering():
        await backend.current().wait_until_gone(processes, LINGERING_LOOK_SECONDS)


def _port_advice(conditions: validation.WaitConditions, outcome: watch.WaitOutcome) -> str | None:
    """For a wait for a port that timed out: who listens on it, as last seen."""
    if outcome.reason is not WaitReason.TIMEOUT or conditions.port is None:
        return None
    return watch.port_timeout_advice(conditions.port, outcome.port_look)


def _earlier_output_advice(reason: WaitReason, status: Status, start: int) -> str | None:
    """For a wait that saw its task end without a word: where the output it wrote before is."""
    if reason is not WaitReason.EXITED or status.output or start <= status.dropped_bytes:
        return None
    return (
        f"it wrote nothing during this wait, but {start - status.dropped_bytes} bytes before it: read them with "
        f"get_task_status (the last lines, or since={status.dropped_bytes})"
    )


async def _checked_since(path: Path, since: int | None, *, default_end: bool) -> int:
    """A cursor to search or wait from: ``since`` if it lies within the log, else the log's end
    (``default_end``) or its start. The log's size is read in a worker thread (a stat may wait on
    the disk)."""
    if since is None and not default_end:
        return 0
    size = await offload.run(offload.LOGS, files.existing_size, path)
    if size is None:  # gone: the read or wait says so
        return since or 0
    if since is None:
        return size
    if not 0 <= since <= size:
        raise InvalidArgumentError(
            "since", since, f"use a cursor from an earlier answer, between 0 and the output size ({size})"
        )
    return since


async def log_size(path: Path) -> int:
    """The size of a task's log, read in a worker thread."""
    return await offload.run(offload.LOGS, files.log_size, path)
