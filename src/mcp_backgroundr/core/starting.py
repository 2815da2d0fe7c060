"""Starting a task: a checked plan becomes a record, started at its place (``start``), which
records it and follows its exit; then its runtime limit and the clients' notice.

On this machine (``start_here``): a log, a containment level (a cgroup, when there is one), a
child process, a registry row and the watchers that follow it. Each step that takes a
resource registers its undoing on an ``ExitStack``: a start that fails at any step leaves no
descriptor open, no log, no cgroup and no input FIFO behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from .. import offload, runner
from ..config import SETTINGS_PREFIX, TASK_ID_ENV, TOKEN_ENV
from ..errors import BackgroundrError, RegistryError, SpawnFailedError
from ..logs import files
from ..models import TaskRecord, new_task_id
from ..platform import backend, process, terminal
from ..platform.containment import Level, Placement
from ..results import Started
from . import taskinput, validation
from .deadlines import enforce_runtime
from .lookup import read_record
from .recording import refresh_all
from .requests import StartPlan
from .state import CoreState, TaskChange
from .task import Task, answer_of
from .watching import copy_terminal, watch_exit

TERMINAL_TYPE = "xterm-256color"
PRIVATE_ENV = frozenset({TOKEN_ENV})
"""Variables of the server that no task inherits, whatever env_passthrough says."""


async def start(state: CoreState, plan: StartPlan) -> Started:
    """Start ``plan``'s command under ``/bin/sh -c`` (on its host over SSH, if it has one) and
    answer at once."""
    if state.group is None or state.shutting_down:
        raise BackgroundrError("the server is shutting down; start the task after it restarts")
    if state.policy.max_tasks is not None:
        await refresh_all(state)
        # Counted with the starts under way, with no await in between: starts sent at once all saw room.
        state.policy.check_room(sum(task.running for task in state.own.values()) + state.starts_in_flight)
    state.starts_in_flight += 1
    try:
        env = validation.task_environment(_inherited_environment(state), plan.env)
        record = _new_record(state, plan, await _new_task_id(state))
        env[TASK_ID_ENV] = record.task_id
        task = await state.place_of(record).start(record, plan, env)
        state.own[record.task_id] = task
    finally:
        state.starts_in_flight -= 1
    state.sockets.prefetch()  # lists and status show the ports of what runs
    enforce_runtime(state, task)
    state.changed(TaskChange.STARTED, record.task_id)
    return _started(record)


def _new_record(state: CoreState, plan: StartPlan, task_id: str) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        name=plan.name,
        command=plan.command,
        cwd=plan.cwd,
        log_path="",
        owner=state.owner,
        started_at=time.time(),
        keep_running=plan.keep_running,
        restart=plan.restart,
        max_restarts=plan.max_restarts,
        max_log_bytes=plan.max_log_bytes,
        max_runtime_seconds=plan.max_runtime_seconds,
        host=plan.host,
        stdin="terminal" if plan.pty else "pipe" if plan.stdin else "none",
    )


async def _new_task_id(state: CoreState) -> str:
    """A task id no task has (the registry is read in a worker thread)."""
    while True:
        task_id = new_task_id()
        if task_id not in state.own and await read_record(state, task_id) is None:
            return task_id


def _inherited_environment(state: CoreState) -> dict[str, str]:
    """The server's variables a task gets: never the token; the server's own settings
    (MCP_BACKGROUNDR_*) only when env_passthrough names them."""
    inherited = {name: value for name, value in os.environ.items() if name not in PRIVATE_ENV}
    if state.policy.env_passthrough is None:
        inherited = {name: value for name, value in inherited.items() if not name.startswith(SETTINGS_PREFIX)}
    return state.policy.environment(inherited)


@dataclass(frozen=True)
class _TaskIO:
    """A local task's standard streams, and the descriptors the server keeps of them."""

    streams: process.Streams
    terminal: int | None = None
    """A pty task's master side: its input, and the output the server copies into its log."""
    log_fd: int | None = None
    """A pty task's log, which the terminal copier writes to."""


async def start_here(state: CoreState, record: TaskRecord, plan: StartPlan, env: dict[str, str]) -> Task:
    """Start a task on this machine: contained, its log opened, spawned, recorded, its exit watched."""
    if state.capper is not None and record.max_log_bytes and not record.supervised:
        await state.capper.ready()  # at a server's start: its log is capped from its first write
    with contextlib.ExitStack() as undo:
        with anyio.CancelScope(shield=True):  # a cgroup made must be known, to be removed if the start fails
            placement = await offload.run(offload.CGROUPS, state.containment.place, record.task_id, plan.limits)
        undo.callback(placement.discard)
        with anyio.CancelScope(shield=True):  # a file made must be known, to be removed if the start fails
            log_fd, home = await offload.run(offload.LOGS, _open_files, state, record, plan, undo)
        with contextlib.ExitStack() as child_ends:  # the child's ends: closed here once it holds them
            io = _open_streams(record, plan, log_fd, home, placement, undo, child_ends)
            if io.terminal is not None:
                env.setdefault("TERM", TERMINAL_TYPE)
            _record_containment(state, record, placement, plan)
            argv = functools.partial(_argv, record, placement, env)
            popen, record.pid_create_time = await _spawn_process(state, argv, record.cwd, env, io.streams)
        task = _task_of(record, popen, io)
        exit_handle = await _record_started(state, task, popen)  # unrecorded: ended, and all undone
        undo.pop_all()
    state.cap_held_by(record)
    if io.terminal is not None:
        assert io.log_fd is not None
        copying = functools.partial(copy_terminal, state, task, io.terminal, io.log_fd)
        state.in_background(task, "copying its terminal", copying)
    state.in_background(task, "watching its exit", functools.partial(watch_exit, state, task, popen, exit_handle))
    return task


def _open_files(
    state: CoreState, record: TaskRecord, plan: StartPlan, undo: contextlib.ExitStack
) -> tuple[int, int | None]:
    """The task's log and input home (see below), made; ``undo`` removes them if the start fails
    (blocking: for a worker thread)."""
    log_fd = _open_log(state, record, undo)
    try:
        return log_fd, _make_input_home(record, plan, undo)
    except BaseException:
        os.close(log_fd)
        raise


def _open_log(state: CoreState, record: TaskRecord, undo: contextlib.ExitStack) -> int:
    """Create the task's log; answer a descriptor that appends to it."""
    logs_dir = state.settings.logs_dir
    try:
        log_path = files.create_log(logs_dir, record.task_id)
        undo.callback(log_path.unlink, missing_ok=True)
        log_fd = files.open_append(log_path)
    except OSError as exc:
        raise SpawnFailedError(
            f"could not create the log file in {logs_dir}: {exc.strerror or exc}; "
            "check that the state directory is writable and the disk is not full"
        ) from exc
    record.log_path = str(log_path)
    return log_fd


def _make_input_home(record: TaskRecord, plan: StartPlan, undo: contextlib.ExitStack) -> int | None:
    """A keep_running task that takes input (not on a terminal) reads a FIFO it takes over from
    any server, its input home: make it, and answer its descriptor."""
    if plan.pty or not (plan.stdin and plan.keep_running):
        return None
    home = taskinput.make_input_home(record)
    undo.callback(_unlink, record.input_path)
    return home


def _open_streams(
    record: TaskRecord,
    plan: StartPlan,
    log_fd: int,
    home: int | None,
    placement: Placement,
    undo: contextlib.ExitStack,
    child_ends: contextlib.ExitStack,
) -> _TaskIO:
    """Where the task's output goes and its input comes from: a terminal, a pipe, its input
    ``home`` (made by :func:`_make_input_home`), or /dev/null."""
    if plan.pty:
        master, slave = terminal.open_terminal()
        undo.callback(os.close, master)
        undo.callback(os.close, log_fd)
        child_ends.callback(os.close, slave)
        streams = process.Streams(output=slave, stdin=slave, terminal=True, join=placement.join)
        return _TaskIO(streams, terminal=master, log_fd=log_fd)
    child_ends.callback(os.close, log_fd)
    if home is not None:
        # Only its runner holds it from then on: an end kept here would keep the task from ever
        # reading end-of-input when another process (the CLI, another server) closes it.
        child_ends.callback(os.close, home)
        return _TaskIO(process.Streams(output=log_fd, stdin=home, join=placement.join))
    stdin = subprocess.PIPE if plan.stdin else subprocess.DEVNULL
    return _TaskIO(process.Streams(output=log_fd, stdin=stdin, join=placement.join))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _record_containment(state: CoreState, record: TaskRecord, placement: Placement, plan: StartPlan) -> None:
    """Record where the task is contained and its limits; keep its log capped from now on."""
    record.containment = placement.level
    record.cgroup = placement.cgroup.encode() if placement.cgroup else None
    record.max_memory_bytes, record.max_processes = plan.limits.memory_bytes, plan.limits.processes
    state.cap(record)


def _argv(record: TaskRecord, placement: Placement, env: dict[str, str]) -> list[str]:
    """The shell running the command (with the task's ``env``), or for a supervised task the
    runner that runs the shell."""
    if not record.supervised:
        return runner.shell_argv(record.command, env.get("PATH", os.defpath))
    reaper = "subreaper" if placement.level is not Level.MARKER else "plain"
    argv = [sys.executable, "-I", runner.__file__, record.run_record_path, record.restart, str(record.max_restarts)]
    argv += [reaper, record.command]
    if record.max_log_bytes:  # the runner caps the log itself: it outlives this server
        argv += [record.log_path, str(record.max_log_bytes), backend.current().head_method]
    return argv


async def _spawn_process(
    state: CoreState, argv: Callable[[], list[str]], cwd: str, env: dict[str, str], streams: process.Streams
) -> tuple[subprocess.Popen[bytes], float | None]:
    """Start the child, and answer it with its start time. In a worker thread: its ``argv`` is
    built there (reading the command's words takes as long as the command; the program is looked
    up on PATH), a spawn waits
    until the child has exec'd (longer on a slow disk or a loaded machine), joining a cgroup
    waits for the kernel (an RCU grace period, often 10-20 ms) between fork and exec, lowering
    its priority writes to /proc, and its start time is read there. Shielded, since a child
    started there must be recorded whatever happens to the request. The orphan reaper waits
    meanwhile; the caller opens the child's exit handle before it awaits anything (a child that
    exits at once is reaped by no one else first)."""
    state.spawns_in_flight += 1
    try:
        with anyio.CancelScope(shield=True):
            niceness = state.settings.task_niceness
            popen, started = await anyio.to_thread.run_sync(_spawn_and_time, argv, cwd, env, streams, niceness)
    finally:
        state.spawns_in_flight -= 1
    if state.shutting_down:  # shutdown began meanwhile and cannot know this child: end it
        await _kill_unrecorded(popen)
        raise SpawnFailedError("the server began shutting down while the task started; start it after it restarts")
    return popen, started


def _spawn_and_time(
    argv: Callable[[], list[str]], cwd: str, env: dict[str, str], streams: process.Streams, niceness: int
) -> tuple[subprocess.Popen[bytes], float | None]:
    popen = process.spawn(argv(), cwd, env, streams, niceness)
    return popen, process.create_time(popen.pid)


async def _kill_unrecorded(popen: subprocess.Popen[bytes]) -> None:
    """End a child no record knows, with everything in its session (a scan: in a worker thread,
    shielded). It may have ended and been reaped already (a listing polls every task this server
    holds): then its group is gone too, unless something it started lives on in it (a process
    group's number is not reused while it has members)."""
    with anyio.CancelScope(shield=True):
        await offload.run(offload.SCANS, _kill_and_collect, popen)


def _kill_and_collect(popen: subprocess.Popen[bytes]) -> None:
    process.kill_session(popen.pid)
    popen.wait()


def _task_of(record: TaskRecord, popen: subprocess.Popen[bytes], io: _TaskIO) -> Task:
    """The task as the server holds it: where its input goes."""
    task = Task(record, popen)
    if io.terminal is not None:
        task.input_fd, task.terminal, task.output_done = io.terminal, True, anyio.Event()
    elif popen.stdin is not None:
        task.input_fd = popen.stdin.fileno()
        os.set_blocking(task.input_fd, False)
    return task


async def _record_started(state: CoreState, task: Task, popen: subprocess.Popen[bytes]) -> int | None:
    """Make the started task known: to this server (the reaper and a shutdown leave it to its
    watcher from now on) and in the registry; unrecorded, it could never be found again, so it is
    ended. Answers the handle its exit watcher waits on."""
    record = task.record
    record.pid = popen.pid
    exit_handle = process.open_exit_handle(popen)
    state.own[record.task_id] = task
    try:
        with anyio.CancelScope(shield=True):  # recorded, or ended, whatever happens to the request
            await state.insert(record)
    except RegistryError:
        del state.own[record.task_id]
        if exit_handle is not None:
            os.close(exit_handle)
        await _kill_unrecorded(popen)
        raise
    return exit_handle


def _started(record: TaskRecord) -> Started:
    """run_background_task's answer for a task just started."""
    return answer_of(Started, record, time.time())
