"""send_task_input: writing to a task's stdin pipe, terminal, or input home."""

from __future__ import annotations

import contextlib
import os
import re
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from .. import offload
from ..errors import BackgroundrError
from ..models import TaskRecord
from ..results import InputWritten
from . import taskinput
from .lookup import find_task, owner_gone
from .reading import log_size
from .state import CoreState
from .task import Task

END_OF_INPUT = b"\x04"
"""Ctrl-D: end of input on a terminal."""
_LINE_ENDS = re.compile(b"[\r\n\x03\x1c\x1a\x04]")
"""What ends a terminal's line: a line end (carriage return reads as a newline), Ctrl-C, Ctrl-\\ or
Ctrl-Z, whose signal discards the line, or Ctrl-D, which hands it over as it is."""
TERMINAL_LINE_BYTES = 4095
"""The most of one line a terminal in line mode holds (Linux; it drops what comes after, but the line end)."""


async def send_input(state: CoreState, task_id: str, text: str, newline: bool, close: bool) -> InputWritten:
    """Write text to a task's stdin (or terminal); optionally close it afterwards."""
    task = await find_task(state, task_id)
    if not task.running:
        raise BackgroundrError(f"task {task_id} has ended ({task.record.state}); it takes no more input")
    return await state.place_of(task.record).send_input(task, text, newline, close)


async def send_here(state: CoreState, task: Task, text: str, newline: bool, close: bool) -> InputWritten:
    """Input to a task on this machine: its pipe, its terminal, or its input home (a FIFO)."""
    task_id = task.record.task_id
    home = task.input_fd is None and await offload.run(offload.LOGS, taskinput.has_input_home, task.record)
    await _check_writable(state, task, home)
    line_end = ("\r" if task.terminal else "\n") if newline else ""
    data = (text + line_end).encode()
    if task.terminal:
        data = _on_a_terminal(task, data, close)
    # One send at a time, so that each reaches the task whole; a close with nothing to write does not
    # queue behind a send waiting for the task to read: it ends that send (see _write_held).
    async with _turn_to_send(task) if data else contextlib.nullcontext():
        cursor = await log_size(Path(task.record.log_path))
        if home:
            written = await taskinput.write_to_input_home(task.record, data, task.input_closed)
        else:
            written = await _write_held(state, task, data)
        if written < len(data):  # its input was closed while this write waited for the task to read
            raise BackgroundrError(f"{_why_closed(task)} after {written} of {len(data)} bytes were written")
        if close and home:
            task.input_closed.set()  # a send waiting for room stops: it holds the input open
            await taskinput.close_input_home(task.record)
        elif close:
            task.close_input_pipe()
    return InputWritten(task_id=task_id, bytes_written=written, closed=close, cursor=cursor)


@contextlib.asynccontextmanager
async def _turn_to_send(task: Task) -> AsyncIterator[None]:
    """This send's turn at the task's input, once the sends before it are done: refused after
    INPUT_WRITE_SECONDS, as a write is, since they wait for a task that does not read (each up to
    that long), and a queue of them must not hold a call past the bound on requests."""
    turn = False
    with anyio.move_on_after(taskinput.INPUT_WRITE_SECONDS):
        await task.input_lock.acquire()
        turn = True
    if not turn:
        raise BackgroundrError(
            f"the task is not reading its input: the sends before this one waited {taskinput.INPUT_WRITE_SECONDS:g}s "
            "for it to read; check its output, or end it"
        )
    try:
        yield
    finally:
        task.input_lock.release()


def _why_closed(task: Task) -> str:
    if not task.running:
        return f"task {task.record.task_id} ended ({task.record.state}); it takes no more input"
    if task.terminal:
        return f"task {task.record.task_id}'s terminal was closed; it takes no more input"
    return "another call closed its input; it takes no more input"


async def _write_held(state: CoreState, task: Task, data: bytes) -> int:
    """Write ``data`` to the task's input as it is now: every await since it was checked (the
    log's size, the writes) lets the task end meanwhile, its terminal close and its descriptor be
    closed (and its number reused). So it is looked at again here, and written through a
    duplicate that is this call's own until the write is done."""
    if task.input_fd is None:
        await _check_writable(state, task, home=False)
    assert task.input_fd is not None  # or _check_writable raised
    held = os.dup(task.input_fd)
    try:
        return await taskinput.write_all(held, data, closed=task.input_closed)
    finally:
        os.close(held)


def _on_a_terminal(task: Task, data: bytes, close: bool) -> bytes:
    """``data`` for a task's terminal, with end of input after it when ``close``: Ctrl-D ends the
    input only at the start of a line; after unfinished text it only hands that text over, so a
    second one follows it then. Refused when a line would be longer than the terminal holds."""
    *ended, unfinished = _LINE_ENDS.split(data)
    first = task.partial_line_bytes + len(ended[0] if ended else unfinished)
    longest = max(first, *map(len, ended[1:]), len(unfinished) if ended else 0)
    if longest > TERMINAL_LINE_BYTES and task.input_fd is not None and _in_line_mode(task.input_fd):
        raise BackgroundrError(
            f"a line of {longest} bytes is more than the task's terminal holds in line mode "
            f"({TERMINAL_LINE_BYTES} bytes; it would drop the rest): send shorter lines, or start the task "
            "with run_background_task's stdin=true instead of pty=true for long input"
        )
    task.partial_line_bytes = len(unfinished) if ended else first
    if close:
        data += END_OF_INPUT * (2 if task.partial_line_bytes else 1)
        task.partial_line_bytes = 0
    return data


def _in_line_mode(terminal: int) -> bool:
    """Whether the terminal reads a line at a time (canonical mode, its default); False if unknown."""
    try:
        return bool(termios.tcgetattr(terminal)[3] & termios.ICANON)
    except (OSError, termios.error):
        return False


async def _check_writable(state: CoreState, task: Task, home: bool) -> None:
    if task.input_fd is not None or home:
        return
    task_id = task.record.task_id
    if task.terminal or not task.running:  # its terminal closed: it has ended, or is ending
        ended = "" if task.running else f" ({task.record.state})"
        raise BackgroundrError(f"task {task_id} has ended{ended}; it takes no more input")
    if task_id not in state.own and await _held_elsewhere(task.record):
        raise BackgroundrError(
            f"task {task_id} belongs to another server ({task.record.owner}), which holds its stdin; send "
            "it input there (keep_running tasks started with run_background_task's stdin=true take input from any "
            "server)"
        )
    raise BackgroundrError(
        f"task {task_id} has no open stdin: start tasks that need input with run_background_task's stdin=true "
        "or pty=true "
        "(and do not close it while you still need it)"
    )


async def _held_elsewhere(record: TaskRecord) -> bool:
    """Whether another server holds the input of its task: one started with input (or by a version
    that did not record it), not under a runner (whose input home, when it has one, any server
    writes to), whose server still runs."""
    return record.stdin != "none" and not record.keep_running and not await owner_gone(record.owner)
