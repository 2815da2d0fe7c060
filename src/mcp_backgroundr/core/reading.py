"""Reading a task: its status with a bounded slice of output, a grep of its log, and waits
for its exit, a line or a port."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import psutil

from .. import offload
from ..errors import InvalidArgumentError
from ..logs import files, patterns
from ..logs.grep import GrepResult, grep_log_in_thread
from ..models import TaskRecord, TaskStatus, WaitReason, WaitResult
from . import validation, watch
from .lookup import find_task
from .state import CoreState
from .task import Task


async def status(state: CoreState, task_id: str, lines: int | None, since: int | None, raw: bool) -> TaskStatus:
    """Lifecycle and a bounded slice of output of one task."""
    task = find_task(state, task_id)
    settings = state.settings
    if lines is None:
        lines = settings.default_lines
    if lines < 0 or lines > settings.max_lines:
        raise InvalidArgumentError(
            "lines", lines, f"ask for 0 to {settings.max_lines} lines, or read forward with since"
        )
    if task.record.host is not None:
        remote_status, ended = await state.remote.status(task, lines, since, raw)
        state.after_remote(task, ended)
        return remote_status
    as_of = task.snapshot()
    processes = await task.live_processes()
    writer_alive = as_of.running or bool(processes)
    path = Path(task.record.log_path)
    budget = settings.output_budget
    if since is None:
        read = functools.partial(files.read_tail, path, lines, budget, writer_alive=writer_alive, raw=raw)
    else:
        if since < 0:
            raise InvalidArgumentError("since", since, "pass a cursor (a byte offset >= 0) from an earlier answer")
        read = functools.partial(files.read_forward, path, since, budget, writer_alive=writer_alive, raw=raw)
    piece = await offload.run(offload.LOGS, read)
    return await status_with(state, task, as_of, piece, processes)


async def status_with(
    state: CoreState, task: Task, as_of: TaskRecord, piece: files.OutputSlice, processes: list[psutil.Process]
) -> TaskStatus:
    """A task's status ``as_of`` a snapshot taken before ``piece`` of its output was read; what its
    processes use (and its runner's status) is read in a worker thread, their listening sockets
    picked from the shared socket table."""
    sockets = (await state.sockets.table()).sockets if processes else []
    usage, run = await offload.run(offload.SCANS, task.measure, processes, sockets)
    return task.status(as_of, piece, processes, usage, run)


async def grep(state: CoreState, task_id: str, pattern_text: str, since: int | None) -> TaskStatus:
    """Status whose output is the log lines (from ``since``) matching ``pattern_text``."""
    task = find_task(state, task_id)
    if task.record.host is not None:
        remote_status, ended = await state.remote.grep(task, pattern_text, since)
        state.after_remote(task, ended)
        return remote_status
    pattern = patterns.compiled("grep", pattern_text)
    assert pattern is not None
    path = Path(task.record.log_path)
    start = _checked_since(path, since, default=0)
    as_of = task.snapshot()
    found = await grep_log_in_thread(path, pattern, start, state.settings.output_budget)
    piece = files.OutputSlice(
        found.text, found.cursor, found.size, found.resume_at is not None, _grep_note(found), found.dropped
    )
    found_status = await status_with(state, task, as_of, piece, await task.live_processes())
    found_status.grep_matches = found.matches
    return found_status


def _grep_note(found: GrepResult) -> str | None:
    notes = []
    if found.resume_at is not None:
        notes.append(
            f"{found.matches - found.shown} more matching lines do not fit in the budget; "
            f"call again with since={found.resume_at} to see them, or narrow the pattern"
        )
    if found.dropped:
        notes.append(f"the first {found.dropped} bytes were dropped (size cap): line numbers count from there")
    return "; ".join(notes) or None


async def wait(
    state: CoreState,
    task_id: str,
    conditions: validation.WaitConditions,
    since: int | None = None,
    progress: watch.ProgressReporter | None = None,
) -> WaitResult:
    """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""
    task = find_task(state, task_id)
    if task.record.host is not None:
        result, ended = await state.remote.wait(task, conditions, since, progress)
        state.after_remote(task, ended)
        return result
    path = Path(task.record.log_path)
    start = _checked_since(path, since, default=files.log_size(path))
    began = time.monotonic()

    async def owns_port(port: int, seen_at: float) -> bool:
        return await state.sockets.task_listens_on(task.record.task_id, port, seen_at)

    outcome = await watch.first_event(state.writes_watched, task.exited, path, start, conditions, owns_port, progress)
    as_of = task.snapshot()
    settings = state.settings
    read = functools.partial(
        files.read_tail, path, settings.max_lines, settings.output_budget, writer_alive=as_of.running, floor=start
    )
    piece = await offload.run(offload.LOGS, read)
    found_status = await status_with(state, task, as_of, piece, await task.live_processes())
    return WaitResult(
        reason=outcome.reason,
        waited_seconds=round(time.monotonic() - began, 3),
        matched_line=outcome.match.line if outcome.match else None,
        matched_cursor=outcome.match.cursor if outcome.match else None,
        status=found_status,
        advice=_earlier_output_advice(outcome.reason, found_status, start),
    )


def _earlier_output_advice(reason: WaitReason, status: TaskStatus, start: int) -> str | None:
    """For a wait that saw its task end without a word: where the output it wrote before is."""
    if reason is not WaitReason.EXITED or status.output or start <= status.dropped_bytes:
        return None
    return (
        f"it wrote nothing during this wait, but {start - status.dropped_bytes} bytes before it: read them with "
        f"get_task_status (the last lines, or since={status.dropped_bytes})"
    )


def _checked_since(path: Path, since: int | None, default: int) -> int:
    """A cursor to search or wait from: ``since`` if it lies within the log, else ``default``."""
    if since is None:
        return default
    size = files.log_size(path)
    if not 0 <= since <= size:
        raise InvalidArgumentError(
            "since", since, f"use a cursor from an earlier answer, between 0 and the output size ({size})"
        )
    return since
