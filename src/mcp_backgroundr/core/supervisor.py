"""Task lifecycle: start, watch, read, end, and end everything at shutdown.

The supervisor owns the tasks this server started. Each task has one watcher
coroutine blocked on the pidfd of its shell, so an exit is recorded the moment
it happens; nothing polls. Ending is shielded from cancellation and bounded in
time, so a cancelled call never leaves half a process tree behind.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import psutil
from anyio.abc import TaskGroup

from .. import exits, offload, runner
from ..config import SETTINGS_PREFIX, TASK_ID_ENV, TOKEN_ENV, Settings
from ..errors import (
    BackgroundrError,
    InvalidArgumentError,
    RegistryError,
    SpawnFailedError,
    TaskNotFoundError,
    plain_number,
)
from ..logs import files, holes, logcap, patterns
from ..logs.grep import grep_log_in_thread
from ..models import (
    EndedTask,
    InputSent,
    RemovedTask,
    StartedTask,
    Survivor,
    TaskList,
    TaskRecord,
    TaskState,
    TaskStatus,
    WaitReason,
    WaitResult,
    new_task_id,
    shown_command,
)
from ..platform import process, scans, terminal
from ..platform.containment import Arrivals, Containment, Level, Limits, end_trees, has_exited, unclaimed_children
from ..platform.inotify import WriteWatches
from ..remote import ExitWatches, RemoteTasks
from ..store import orphans, retention
from ..store.registry import Registry
from . import registry_guard, startup, taskinput, validation, watch, watchers
from .policy import Policy
from .task import Task, summary_of

MAX_NAME_LENGTH = 200
TERMINAL_TYPE = "xterm-256color"
TERMINAL_DRAIN_SECONDS = 0.5
FOREIGN_RECORD_WAIT_SECONDS = 2.0
FOREIGN_RECORD_POLL_SECONDS = 0.05
END_OF_INPUT = b"\x04"
"""Ctrl-D: end of input on a terminal."""
PRUNE_INTERVAL_SECONDS = 60.0
"""Pruning reads the whole registry: after exits it runs at most this often."""
SHUTDOWN_REASON = "server shutdown"
REMOTE_SHUTDOWN_SECONDS = 0.6
"""At shutdown, how long remote hosts get (beyond the grace) to end the tasks there."""
END_REASON = "end_background_task"


PRIVATE_ENV = frozenset({TOKEN_ENV})
"""Variables of the server that no task inherits, whatever env_passthrough says."""
VERIFIED = {
    Level.CGROUP: "the task's cgroup is empty",
    Level.SUBREAPER: "no process in its session, descended from it (orphans come back to this server) or "
    "carrying its marker is left",
    Level.MARKER: "no process in its session or carrying the task's marker is left (a process that left both "
    "cannot be seen at this containment level)",
}
"""What an end with no survivor has checked, at each containment level."""


def memory_reason(limit: int | None) -> str:
    return f"killed by the kernel: max_memory_bytes ({limit} bytes) reached (its cgroup counted an oom_kill)"


def runtime_reason(limit: float) -> str:
    return f"max_runtime_seconds ({plain_number(limit)} s) reached"


class Supervisor:
    """Starts and ends the tasks of one server process, and answers about any task."""

    def __init__(
        self, settings: Settings, registry: Registry, owner: str | None = None, policy: Policy | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.policy = policy or Policy()
        self.owner = owner or orphans.owner_id()
        self.on_change: ChangeHook | None = None
        """Told (in the background) when a task starts, ends or is removed."""
        self._tasks: dict[str, Task] = {}
        self._foreign: dict[str, Task] = {}
        """Views of other servers' tasks that a caller asked about."""
        self._sockets = scans.Sockets()
        self._pruned_at = 0.0
        self._task_group: TaskGroup | None = None
        self._capper: logcap.LogCapper | None = None
        self._writes: WriteWatches | None = None
        self._shutting_down = False
        self._shutdown_done: anyio.Event | None = None
        self.containment = Containment(Level.MARKER)
        """Chosen when the server starts: how new tasks are contained."""
        self._spawns_in_flight = 0
        self._arrivals = Arrivals()
        self._arrivals_lock = anyio.Lock()
        """One look at the orphans a task's exit handed over at a time."""
        self.remote = RemoteTasks(settings)
        """Where tasks with a host go."""
        self._remote_exits = ExitWatches(
            self.remote, lambda what, work: self._spawn(None, what, work), lambda t: self._after_remote(t, ended=True)
        )
        self._exit_stack = contextlib.AsyncExitStack()
        """What __aexit__ undoes: shutdown, then the task group."""

    async def __aenter__(self) -> Supervisor:
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._start(stack)
                self._exit_stack = stack.pop_all()
        except BaseExceptionGroup as group:
            raise startup.the_failure(group) from None
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Everything a server needs before it answers; on a failure, ``stack`` undoes what was done."""
        process.raise_open_file_limit()
        self.containment = Containment.choose(self.settings.containment, self.settings.cgroup_dir)
        offload.favour_the_event_loop()
        with startup.step("create the inotify instance that caps logs"):
            self._capper = logcap.LogCapper()
        with startup.step("create the inotify instance that waits use"):
            self._writes = WriteWatches()
        self._task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(self._stop)
        self._capper.on_failure = self._cap_failed
        self._spawn(None, "capping logs", self._capper.run)
        self._spawn(None, "watching logs for waits", self._writes.run)
        if self.containment.level is not Level.MARKER:
            self._spawn(None, "reaping orphans", self._reap_orphans)
        keeping = functools.partial(registry_guard.keep_registry, self.registry, self._writes)
        self._spawn(None, "watching the registry file", keeping)
        records = await self._take_over_left_behind()
        await self._prune_now()
        await self._cap_grown_logs(records)

    async def _cap_grown_logs(self, records: list[TaskRecord]) -> None:
        """Logs may have grown past their caps while no server ran (a task of a server that was
        SIGKILLed writes on): bring every one of them back under its cap (the registry as read at
        start-up: a log pruned since is gone, and skipped)."""
        logs = [(Path(r.log_path), r.max_log_bytes) for r in records if r.max_log_bytes]
        if capped := await anyio.to_thread.run_sync(holes.enforce_all, logs):
            watchers.report("server", f"capped {capped} log(s) that had grown past their cap while no server ran")

    async def _stop(self) -> None:
        await self.shutdown()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    def _prune(self) -> None:
        """Forget finished tasks beyond the retention settings, with their logs (soon, in a worker thread)."""
        if not self._shutting_down:
            self._pruned_at = time.monotonic()
            self._spawn(None, "pruning finished tasks", self._prune_now)

    async def _prune_now(self) -> None:
        self._pruned_at = time.monotonic()
        try:
            keep, days = self.settings.keep_finished, self.settings.keep_days
            pruned = await offload.run(offload.REGISTRY, retention.prune, self.registry, keep, days)
        except RegistryError as exc:
            print(f"mcp-backgroundr: {exc}", file=sys.stderr)
            return
        for record in pruned:
            self._forget(record)
        if remote := [r for r in pruned if r.host is not None]:
            forgetting = functools.partial(self._forget_remote, remote)
            self._spawn(None, "deleting forgotten tasks' files on their hosts", forgetting)

    async def _forget_remote(self, records: list[TaskRecord]) -> None:
        for left in await self.remote.forget(records):
            watchers.report("server", left)

    async def _take_over_left_behind(self) -> list[TaskRecord]:
        """Deal with the tasks of servers on this host that are gone: end those that were not
        meant to outlive them, adopt the keep_running ones, and settle those that ended.
        Answers every record of the registry, as read."""
        records = await offload.run(offload.REGISTRY, self.registry.records)
        found = orphans.left_behind([r for r in records if r.host is None], self.owner)
        if found.to_end:
            with anyio.CancelScope(shield=True):
                await orphans.end_orphans(
                    found.to_end, self.settings.shutdown_grace_seconds, self.settings.shutdown_kill_wait_seconds
                )
        for record in found.to_settle:
            self._take_finished(record)
        for record in found.to_adopt:
            self._adopt(record)
        remote = [r for r in records if r.host is not None and r.running and orphans.owner_is_gone(r.owner)]
        for record in remote:
            # The connection is not the task: whatever kind, it ran on; its host says how it stands.
            record.owner = self.owner
            self._tasks[record.task_id] = Task(record, None)
            self._enforce_runtime(self._tasks[record.task_id])
            self._remote_exits.track(self._tasks[record.task_id])
        self._save([*found.to_end, *found.to_settle, *found.to_adopt, *remote])
        return records

    async def _reap_orphans(self) -> None:
        """As subreaper, orphaned descendants of tasks become our children: collect them when
        they exit, so no zombie piles up."""
        with anyio.open_signal_receiver(signal.SIGCHLD) as exits:
            self._reap()
            async for _ in exits:
                self._reap()

    def _reap(self) -> None:
        # A child spawned in a worker thread is not yet known: its exit must wait for its watcher.
        if self.containment.level is not Level.MARKER and not self._spawns_in_flight:
            own = {t.popen.pid for t in self._tasks.values() if t.popen is not None and t.popen.returncode is None}
            own |= self.remote.connections.helper_pids()
            self.containment.reap(own)

    def _cap(self, record: TaskRecord) -> None:
        """Keep a task's log under its cap from now on (or record why it cannot be); a supervised
        task's runner does that itself, with or without a server."""
        if self._capper is not None and record.max_log_bytes and not record.supervised:
            try:
                self._capper.watch(Path(record.log_path), record.max_log_bytes)
            except OSError as exc:  # e.g. out of inotify watches
                note = f"its log is not capped ({watchers.failure_text(exc)})"
                watchers.report(f"task {record.task_id}", note)
                _add_note(record, note)

    def _cap_failed(self, path: Path, note: str) -> None:
        """The capper could not keep this log under its cap: record it on its task."""
        for task in self._tasks.values():
            if task.record.log_path == str(path):
                watchers.report(f"task {task.record.task_id}", note)
                self._note(task, note)

    def _forget(self, record: TaskRecord) -> None:
        self._tasks.pop(record.task_id, None)
        self._foreign.pop(record.task_id, None)
        if self._capper is not None:
            self._capper.forget(Path(record.log_path))

    def _take_finished(self, record: TaskRecord) -> None:
        """Record how a keep_running task ended between two servers (its runner says) and
        show it as one of ours."""
        orphans.settle_from_runner(record)
        record.owner = self.owner
        task = Task(record, None)
        task.exited.set()
        self._tasks[record.task_id] = task

    def _adopt(self, record: TaskRecord) -> None:
        """Take over a keep_running task: watch its runner (not our child) through a pidfd."""
        assert record.pid is not None
        assert self._task_group is not None
        try:
            pidfd = os.pidfd_open(record.pid)
        except ProcessLookupError:
            self._take_finished(record)
            return
        if not process.same_process(record.pid, record.pid_create_time):
            os.close(pidfd)  # it ended, and its pid was reused, just now
            self._take_finished(record)
            return
        record.owner = self.owner
        record.max_runtime_seconds = self.policy.adopted_limit(record.max_runtime_seconds)
        task = Task(record, None)
        self._tasks[record.task_id] = task
        self._cap(record)
        self._spawn(task, "watching its exit", functools.partial(self._watch_adopted, task, pidfd))
        self._enforce_runtime(task)

    async def _watch_adopted(self, task: Task, pidfd: int) -> None:
        try:
            await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        if task.running:
            asked_to_end = task.record.end_reason if task.record.kill_requested else None
            orphans.settle_from_runner(task.record)
            if asked_to_end is not None:
                task.record.state, task.record.end_reason = TaskState.KILLED, asked_to_end
            task.exited.set()
            if not self._shutting_down:
                self._save([task.record])
        self._changed(TaskChange.ENDED, task.record.task_id)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._exit_stack.__aexit__(exc_type, exc, tb)

    # -- start -----------------------------------------------------------------

    async def start(
        self,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str | None] | None = None,
        name: str | None = None,
        *,
        stdin: bool = False,
        pty: bool = False,
        keep_running: bool = False,
        restart: str = "no",
        max_restarts: int | None = None,
        max_log_bytes: int | None = None,
        max_runtime_seconds: float | None = None,
        max_memory_bytes: int | None = None,
        max_processes: int | None = None,
        host: str | None = None,
    ) -> StartedTask:
        """Start ``command`` under ``/bin/sh -c`` (on ``host`` over SSH, if given) and answer at once.

        ``stdin`` keeps a pipe to the task's standard input; ``pty`` runs it in a
        pseudo-terminal (which takes input too). The policy may refuse it, or limit
        how long it runs.
        """
        if self._task_group is None or self._shutting_down:
            raise BackgroundrError("the server is shutting down; start the task after it restarts")
        command = validation.checked_command(command)
        self.policy.check_command(command)
        if host is not None:
            self.policy.check_host(host)
            if pty:
                raise InvalidArgumentError("pty", pty, "a remote task cannot have a terminal yet; use stdin=true")
            if max_memory_bytes is not None or max_processes is not None:
                field = "max_memory_bytes" if max_memory_bytes is not None else "max_processes"
                raise InvalidArgumentError(
                    field, max_memory_bytes or max_processes, "remote tasks have no cgroup limits yet"
                )
        else:
            workdir = self.policy.checked_cwd(validation.checked_cwd(cwd))
        if self.policy.max_tasks is not None:
            self.policy.check_room(self._running_count())
        runtime_limit = self.policy.runtime_limit(max_runtime_seconds)
        limits = Limits(
            self.policy.task_limit("max_memory_bytes", max_memory_bytes),
            self.policy.task_limit("max_processes", max_processes),
        )
        task_env = validation.task_environment(self._inherited_environment(), env)
        if name is not None and len(name) > MAX_NAME_LENGTH:
            raise InvalidArgumentError("name", name, f"use a label of at most {MAX_NAME_LENGTH} characters")
        restart_limit = validation.checked_restart(restart, max_restarts, self.settings.default_max_restarts)
        log_cap = validation.checked_log_cap(max_log_bytes, self.settings.max_log_bytes)
        if keep_running and pty:
            raise InvalidArgumentError(
                "keep_running", keep_running, "a pty task cannot outlive the server that holds its terminal; drop pty"
            )

        task_id = self._new_task_id()
        record = TaskRecord(
            task_id=task_id,
            name=name,
            command=command,
            cwd=workdir if host is None else cwd or "",
            log_path="",
            owner=self.owner,
            started_at=time.time(),
            keep_running=keep_running,
            restart=restart,
            max_restarts=restart_limit,
            max_log_bytes=log_cap,
            max_runtime_seconds=runtime_limit,
            host=host,
        )
        if host is not None:
            return await self._start_remote(record, {**(env or {}), TASK_ID_ENV: task_id}, stdin)
        with anyio.CancelScope(shield=True):  # a cgroup made must be known, to be removed if the start fails
            placement = await offload.run(offload.CGROUPS, self.containment.place, task_id, limits)
        try:
            log_path = files.create_log(self.settings.logs_dir, task_id)
            log_fd = files.open_append(log_path)
        except OSError as exc:
            placement.discard()
            raise SpawnFailedError(
                f"could not create the log file in {self.settings.logs_dir}: {exc.strerror or exc}; "
                "check that the state directory is writable and the disk is not full"
            ) from exc
        task_env[TASK_ID_ENV] = task_id
        record.log_path = str(log_path)
        record.containment = placement.level
        record.cgroup = placement.cgroup.encode() if placement.cgroup else None
        record.max_memory_bytes, record.max_processes = limits.memory_bytes, limits.processes
        self._cap(record)
        master, slave = terminal.open_terminal() if pty else (None, None)
        home: int | None = None
        if slave is not None:
            task_env.setdefault("TERM", TERMINAL_TYPE)
            streams = process.Streams(output=slave, stdin=slave, terminal=True, join=placement.join)
        else:
            # A keep_running task reads its input home (see taskinput), handed to its runner as stdin.
            home = taskinput.make_input_home(record) if stdin and keep_running else None
            stdin_target = subprocess.PIPE if stdin and home is None else subprocess.DEVNULL
            streams = process.Streams(output=log_fd, stdin=stdin_target if home is None else home, join=placement.join)
        argv = runner.shell_argv(command)
        if record.supervised:
            reaper = "subreaper" if placement.level is not Level.MARKER else "plain"
            argv = [sys.executable, "-I", runner.__file__, record.status_path, restart, str(restart_limit), reaper]
            argv.append(command)
            if log_cap:  # the runner caps the log itself: it outlives this server
                argv += [record.log_path, str(log_cap)]
        try:
            popen = await self._spawn_process(argv, workdir, task_env, streams)
        except SpawnFailedError:
            for descriptor in (log_fd, master, slave, home):
                if descriptor is not None:
                    os.close(descriptor)
            log_path.unlink(missing_ok=True)
            placement.discard()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.input_path)
            raise
        task = Task(record, popen)
        if master is not None and slave is not None:
            os.close(slave)  # only the task holds it now: its last close ends the copying
            task.input_fd, task.terminal, task.output_done = master, True, anyio.Event()
            self._spawn(task, "copying its terminal", functools.partial(self._copy_terminal, task, master, log_fd))
        else:
            os.close(log_fd)
            if popen.stdin is not None:
                task.input_fd = popen.stdin.fileno()
                os.set_blocking(task.input_fd, False)
            task.input_fd = home if home is not None else task.input_fd
        record.pid = popen.pid
        record.pid_create_time = process.create_time(popen.pid)
        exit_handle = process.open_exit_handle(popen)
        self._tasks[task_id] = task  # known from now on: the reaper and a shutdown leave it to its watcher
        try:
            with anyio.CancelScope(shield=True):  # recorded, or ended, whatever happens to the request
                await offload.run(offload.REGISTRY, self.registry.insert, record)
        except RegistryError:
            # Unrecorded, it could never be found again: end it now.
            del self._tasks[task_id]
            os.close(exit_handle)
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        self._spawn(task, "watching its exit", functools.partial(self._watch, task, popen, exit_handle))
        self._enforce_runtime(task)
        self._changed(TaskChange.STARTED, task_id)
        return _started(record)

    async def _start_remote(self, record: TaskRecord, env: dict[str, str | None], stdin: bool) -> StartedTask:
        assert self._task_group is not None
        await self.remote.start(record, env, stdin, self.policy.allowed_cwd_as_written)
        try:
            await offload.run(offload.REGISTRY, self.registry.insert, record)
        except RegistryError:
            await self.remote.end(Task(record, None), 0, END_REASON)  # unrecorded, it could never be found again
            raise
        self._tasks[record.task_id] = Task(record, None)
        self._enforce_runtime(self._tasks[record.task_id])
        self._remote_exits.track(self._tasks[record.task_id])
        self._changed(TaskChange.STARTED, record.task_id)
        return _started(record)

    def _after_remote(self, task: Task, ended: bool) -> None:
        """Record what a call to a remote host learnt: its last answer, and an exit seen just now."""
        if task.record.task_id in self._tasks:
            self._save([task.record])
            if ended:
                self._changed(TaskChange.ENDED, task.record.task_id)

    async def _spawn_process(
        self, argv: list[str], cwd: str, env: dict[str, str], streams: process.Streams
    ) -> subprocess.Popen[bytes]:
        """Start the child. Joining a cgroup waits for the kernel (an RCU grace period, often
        10-20 ms) between fork and exec, so that spawn runs in a worker thread; shielded, since
        a child started there must be recorded whatever happens to the request."""
        if streams.join is None:
            return process.spawn(argv, cwd, env, streams)
        self._spawns_in_flight += 1
        try:
            with anyio.CancelScope(shield=True):
                popen = await anyio.to_thread.run_sync(process.spawn, argv, cwd, env, streams)
        finally:
            self._spawns_in_flight -= 1
        if self._shutting_down:  # shutdown began meanwhile and cannot know this child: end it
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise SpawnFailedError("the server began shutting down while the task started; start it after it restarts")
        return popen

    def _inherited_environment(self) -> dict[str, str]:
        """The server's variables a task gets: never the token; the server's own settings
        (MCP_BACKGROUNDR_*) only when env_passthrough names them."""
        inherited = {name: value for name, value in os.environ.items() if name not in PRIVATE_ENV}
        if self.policy.env_passthrough is None:
            inherited = {name: value for name, value in inherited.items() if not name.startswith(SETTINGS_PREFIX)}
        return self.policy.environment(inherited)

    def _running_count(self) -> int:
        for task in self._tasks.values():
            self._refresh(task)
        return sum(task.running for task in self._tasks.values())

    def _new_task_id(self) -> str:
        while True:
            task_id = new_task_id()
            if task_id not in self._tasks and self.registry.get(task_id) is None:
                return task_id

    async def _watch(self, task: Task, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        returncode = await process.wait_for_exit(popen, pidfd)
        if self.containment.level is Level.SUBREAPER:
            with anyio.CancelScope(shield=True):  # before the exit is recorded, so no answer misses them
                await self._claim_arrivals()
        if task.output_done is not None:
            # Let the terminal copier catch up with what the task wrote just before exiting.
            with anyio.move_on_after(TERMINAL_DRAIN_SECONDS):
                await task.output_done.wait()
        self._record_exit(task, returncode)
        self._reap()
        cgroup = task.cgroup
        if cgroup is not None and not await offload.run(offload.CGROUPS, cgroup.populated):
            await task.settle()
        self._changed(TaskChange.ENDED, task.record.task_id)
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL_SECONDS:
            self._prune()

    async def _claim_arrivals(self) -> None:
        """A task's main process exited and handed its orphans to us: claim them for its task
        where it can be told (see containment.Arrivals), in a worker thread."""
        leaders = {t.popen.pid: t.record.task_id for t in self._tasks.values() if t.popen is not None}
        popens = {t.popen.pid: t.popen for t in self._tasks.values() if t.popen is not None}

        def exited(pid: int) -> bool:
            return popens[pid].returncode is not None or has_exited(pid)

        others = self.remote.connections.helper_pids()
        async with self._arrivals_lock:
            await offload.run(offload.SCANS, self._arrivals.claim, leaders, exited, others)

    def _enforce_runtime(self, task: Task) -> None:
        if task.record.max_runtime_seconds is not None and self._task_group is not None:
            limit = task.record.max_runtime_seconds
            self._spawn(task, "enforcing max_runtime_seconds", functools.partial(self._end_at_deadline, task, limit))

    async def _end_at_deadline(self, task: Task, limit: float) -> None:
        """End the task once it has run for ``limit`` seconds (counted from its first start),
        and so the processes it left behind if its main process ended sooner."""
        await anyio.sleep(max(0.0, task.record.started_at + limit - time.time()))
        if self._shutting_down or self._tasks.get(task.record.task_id) is not task:
            return
        if task.running:
            await self.end(task.record.task_id, reason=runtime_reason(limit))
        elif await task.lingering():
            await self.end(task.record.task_id)
            task.record.end_reason = f"{runtime_reason(limit)}: ended the processes it left behind"
            self._save([task.record])

    def _changed(self, change: TaskChange, task_id: str) -> None:
        if self.on_change is not None and self._task_group is not None and not self._shutting_down:
            self._spawn(None, "telling clients", functools.partial(self.on_change, change, task_id))

    def _spawn(self, task: Task | None, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` for ``task`` in the background; its failure is recorded on the task
        (``end_reason``, a line on stderr) and never ends the server."""
        assert self._task_group is not None
        label = "server" if task is None else f"task {task.record.task_id}"
        record = None if task is None else functools.partial(self._note, task)
        self._task_group.start_soon(watchers.contained, label, what, work, record)

    def _note(self, task: Task, note: str) -> None:
        """Add ``note`` to the task's end_reason (recorded, when the task is ours)."""
        _add_note(task.record, note)
        if self._tasks.get(task.record.task_id) is task and not self._shutting_down:
            self._save([task.record])

    async def _copy_terminal(self, task: Task, master: int, log_fd: int) -> None:
        def failed(error: OSError) -> None:
            note = f"its terminal output could not be written to its log ({watchers.failure_text(error)})"
            watchers.report(f"task {task.record.task_id}", note)
            self._note(task, note)

        try:
            if lost := await terminal.copy_output(master, log_fd, failed):
                watchers.report(f"task {task.record.task_id}", f"{lost} bytes of terminal output were lost")
                self._note(task, f"{lost} bytes of its terminal output were lost")
        finally:
            task.input_fd = None
            os.close(master)
            if task.output_done is not None:
                task.output_done.set()

    def _refresh(self, task: Task) -> None:
        """Record an exit that happened since the event loop last looked (a single waitpid)."""
        if task.running and task.popen is not None and (returncode := task.popen.poll()) is not None:
            self._record_exit(task, returncode)

    def _record_exit(self, task: Task, returncode: int) -> None:
        if not task.running:
            return
        record = task.record
        if not record.kill_requested:
            # Another server or the CLI may have ended it: it says so in the registry first.
            with contextlib.suppress(RegistryError):
                fresh = self.registry.get(record.task_id)
                if fresh is not None and fresh.kill_requested:
                    record.kill_requested, record.end_reason = True, fresh.end_reason
        record.ended_at = time.time()
        ended = exits.of(returncode)
        record.state, record.exit_code, record.signal = TaskState(ended.state), ended.exit_code, ended.signal
        if record.kill_requested:
            record.state = TaskState.KILLED
        elif task.cgroup is not None and task.cgroup.oom_kills():
            record.state, record.end_reason = TaskState.FAILED, memory_reason(record.max_memory_bytes)
        task.close_input_pipe()
        task.exited.set()
        if not self._shutting_down:
            self._save([record])

    def _save(self, records: list[TaskRecord]) -> None:
        """Record task changes; a registry failure is reported but never stops the server."""
        try:
            self.registry.update_soon(records)  # the event loop never waits on the registry's lock
        except RegistryError as exc:
            print(f"mcp-backgroundr: {exc}", file=sys.stderr)

    # -- read ------------------------------------------------------------------

    def _any(self, task_id: str) -> Task:
        """One of our tasks, or a view of another server's task from the registry."""
        own = self._tasks.get(task_id)
        if own is not None:
            self._refresh(own)
            return own
        record = self.registry.get(task_id)
        if record is None:
            raise TaskNotFoundError(task_id)
        record = orphans.as_it_stands(record)  # its server may be gone
        view = self._foreign.get(task_id)
        if view is None:
            view = self._foreign[task_id] = Task(record, None)
            local = record.host is None
            if local and record.state is TaskState.RUNNING and record.pid is not None and self._task_group is not None:
                self._spawn(view, "watching another server's task", functools.partial(self._watch_foreign, view))
        view.record = record
        if not view.running:
            view.exited.set()
        return view

    async def _watch_foreign(self, view: Task) -> None:
        """Wait for another server's task to end, then for its owner to record how."""
        assert view.record.pid is not None
        await process.wait_until_ended(view.record.pid, view.record.pid_create_time)
        try:
            # Its owner records the exit as soon as it sees it; across processes there is no event
            # to wait on, so look again briefly (only after an exit, and bounded).
            fresh: TaskRecord | None = None
            with anyio.move_on_after(FOREIGN_RECORD_WAIT_SECONDS):
                while (fresh := self.registry.get(view.record.task_id)) is not None and fresh.running:  # noqa: ASYNC110
                    await anyio.sleep(FOREIGN_RECORD_POLL_SECONDS)
            if fresh is not None:
                view.record = orphans.as_it_stands(fresh)
        finally:
            view.exited.set()  # it ended: a waiter learns so even if its record cannot be read

    def command(self, task_id: str) -> str:
        """A task's whole command (answers show at most the start of it)."""
        return self._any(task_id).record.command

    async def status(
        self, task_id: str, lines: int | None = None, since: int | None = None, *, raw: bool = False
    ) -> TaskStatus:
        """Lifecycle and a bounded slice of output of one task."""
        task = self._any(task_id)
        record = task.record
        if lines is None:
            lines = self.settings.default_lines
        if lines < 0 or lines > self.settings.max_lines:
            raise InvalidArgumentError(
                "lines", lines, f"ask for 0 to {self.settings.max_lines} lines, or read forward with since"
            )
        if record.host is not None:
            status, ended = await self.remote.status(task, lines, since, raw)
            self._after_remote(task, ended)
            return status
        as_of = task.snapshot()
        processes = await task.live_processes()
        writer_alive = as_of.running or bool(processes)
        path = Path(record.log_path)
        budget = self.settings.output_budget
        if since is None:
            read = functools.partial(files.read_tail, path, lines, budget, writer_alive=writer_alive, raw=raw)
        else:
            if since < 0:
                raise InvalidArgumentError("since", since, "pass a cursor (a byte offset >= 0) from an earlier answer")
            read = functools.partial(files.read_forward, path, since, budget, writer_alive=writer_alive, raw=raw)
        piece = await offload.run(offload.LOGS, read)
        return await self._status_of(task, as_of, piece, processes)

    async def _status_of(
        self, task: Task, as_of: TaskRecord, piece: files.OutputSlice, processes: list[psutil.Process]
    ) -> TaskStatus:
        """A task's status ``as_of`` a snapshot taken before ``piece`` of its output was read; what its
        processes use (and its runner's status) is read in a worker thread, their listening sockets
        picked from the shared socket table."""
        sockets = (await self._sockets.table()).sockets if processes else []
        usage, run = await offload.run(offload.SCANS, task.measure, processes, sockets)
        return task.status(as_of, piece, processes, usage, run)

    async def grep(self, task_id: str, pattern_text: str, since: int | None = None) -> TaskStatus:
        """Status whose output is the log lines (from ``since``) matching ``pattern_text``."""
        task = self._any(task_id)
        if task.record.host is not None:
            status, ended = await self.remote.grep(task, pattern_text, since)
            self._after_remote(task, ended)
            return status
        pattern = patterns.compiled("grep", pattern_text)
        assert pattern is not None
        path = Path(task.record.log_path)
        start = _checked_since(path, since, default=0)
        as_of = task.snapshot()
        found = await grep_log_in_thread(path, pattern, start, self.settings.output_budget)
        notes = []
        if found.resume_at is not None:
            notes.append(
                f"{found.matches - found.shown} more matching lines do not fit in the budget; "
                f"call again with since={found.resume_at} to see them, or narrow the pattern"
            )
        if found.dropped:
            notes.append(f"the first {found.dropped} bytes were dropped (size cap): line numbers count from there")
        note = "; ".join(notes) or None
        piece = files.OutputSlice(
            found.text, found.cursor, found.size, found.resume_at is not None, note, found.dropped
        )
        status = await self._status_of(task, as_of, piece, await task.live_processes())
        status.grep_matches = found.matches
        return status

    # -- wait ------------------------------------------------------------------

    def check_wait(
        self,
        timeout_seconds: float | None,
        output_pattern: str | None,
        port: int | None,
        names: tuple[str, str, str] = ("timeout_seconds", "output_pattern", "port"),
    ) -> validation.WaitConditions:
        """Validate wait conditions before anything is started."""
        timeout = self.settings.default_wait_seconds if timeout_seconds is None else timeout_seconds
        return validation.checked_wait(timeout, output_pattern, port, self.settings.max_wait_seconds, names)

    async def wait(
        self,
        task_id: str,
        conditions: validation.WaitConditions,
        since: int | None = None,
        progress: watch.ProgressReporter | None = None,
    ) -> WaitResult:
        """Wait for the first of: the task exits, a new line matches, its port accepts, the timeout."""
        task = self._any(task_id)
        if task.record.host is not None:
            result, ended = await self.remote.wait(task, conditions, since, progress)
            self._after_remote(task, ended)
            return result
        path = Path(task.record.log_path)
        start = _checked_since(path, since, default=files.log_size(path))
        began = time.monotonic()
        assert self._writes is not None

        async def owns_port(port: int, seen_at: float) -> bool:
            return await self._sockets.task_listens_on(task.record.task_id, port, seen_at)

        outcome = await watch.first_event(self._writes, task.exited, path, start, conditions, owns_port, progress)
        as_of = task.snapshot()
        read = functools.partial(
            files.read_tail,
            path,
            self.settings.max_lines,
            self.settings.output_budget,
            writer_alive=as_of.running,
            floor=start,
        )
        piece = await offload.run(offload.LOGS, read)
        status = await self._status_of(task, as_of, piece, await task.live_processes())
        return WaitResult(
            reason=outcome.reason,
            waited_seconds=round(time.monotonic() - began, 3),
            matched_line=outcome.match.line if outcome.match else None,
            matched_cursor=outcome.match.cursor if outcome.match else None,
            status=status,
            advice=_earlier_output_advice(outcome.reason, status, start),
        )

    def own_records(self) -> list[TaskRecord]:
        """The records of this server's tasks, oldest first (cheap: nothing is read)."""
        return [task.record for task in self._tasks.values()]

    async def list_tasks(
        self, state: TaskState | None = None, everyone: bool = False, limit: int | None = None
    ) -> TaskList:
        """This server's tasks (or, with ``everyone``, every task in the registry), newest first,
        at most ``limit`` of them."""
        for task in self._tasks.values():
            self._refresh(task)
        for task in await self.remote.refresh(list(self._tasks.values())):
            self._after_remote(task, ended=True)
        records = [t.record for t in self._tasks.values()]
        if everyone:
            everything = await offload.run(offload.REGISTRY, self.registry.records)
            others = [r for r in everything if r.task_id not in self._tasks]
            await self._settle_left_remote(others)
            records += await offload.run(offload.SCANS, lambda: [orphans.as_it_stands(r) for r in others])
        now = time.time()
        matching = sorted(
            (r for r in records if state is None or r.state is state), key=lambda r: r.started_at, reverse=True
        )
        shown = matching[:limit]
        ports = await self._sockets.of_tasks({r.task_id for r in shown if r.running})
        return TaskList(
            tasks=[summary_of(r, now, ports.get(r.task_id, [])) for r in shown],
            total=len(matching),
        )

    async def _settle_left_remote(self, records: list[TaskRecord]) -> None:
        """Ask the hosts how the running remote tasks of servers that are gone stand (one call per
        host; a host that is away is skipped), and record those that ended."""
        left = [Task(r, None) for r in records if r.host is not None and r.running and orphans.owner_is_gone(r.owner)]
        self._save([task.record for task in await self.remote.refresh(left)])

    async def send_input(self, task_id: str, text: str, newline: bool = True, close: bool = False) -> InputSent:
        """Write text to a task's stdin (or terminal); optionally close it afterwards."""
        task = self._any(task_id)
        if not task.running:
            raise BackgroundrError(f"task {task_id} has ended ({task.record.state}); it takes no more input")
        if task.record.host is not None:
            return await self.remote.send_input(task, text + ("\n" if newline else ""), close)
        home = task.input_fd is None and taskinput.has_input_home(task.record)
        if task.input_fd is None and not home and task_id not in self._tasks:
            raise BackgroundrError(
                f"task {task_id} belongs to another server ({task.record.owner}), which holds its stdin; send "
                "it input there (keep_running tasks started with stdin=true take input from any server)"
            )
        if task.input_fd is None and not home:
            raise BackgroundrError(
                f"task {task_id} has no open stdin: start tasks that need input with stdin=true or pty=true "
                "(and do not close it while you still need it)"
            )
        line_end = ("\r" if task.terminal else "\n") if newline else ""
        data = (text + line_end).encode()
        if close and task.terminal:
            data += END_OF_INPUT
        cursor = files.log_size(Path(task.record.log_path))
        if home:
            written = await taskinput.write_to_input_home(task.record, data)
        else:
            assert task.input_fd is not None
            written = await taskinput.write_all(task.input_fd, data)
        if close:
            if task.record.keep_running:
                # Before our own end is closed: until the runner holds the FIFO, ours keeps what was written.
                await taskinput.close_input_home(task.record)
            task.close_input_pipe()
        return InputSent(task_id=task_id, bytes_written=written, closed=close, cursor=cursor)

    async def remove(self, task_id: str) -> RemovedTask:
        """Forget a finished task and delete its log: one of ours, or one whose server is gone."""
        task = self._any(task_id)
        if task.running or (task.record.host is None and await task.lingering()):
            raise BackgroundrError(
                f"task {task_id} is still running; end it with end_background_task first, then remove it"
            )
        if task_id not in self._tasks and not orphans.owner_is_gone(task.record.owner):
            raise BackgroundrError(
                f"task {task_id} belongs to a server that still runs ({task.record.owner}), which shows it; "
                "remove it there, or once that server has exited"
            )
        if task.record.host is not None:
            freed = await self.remote.remove(task)
        await offload.run(offload.REGISTRY, self.registry.delete, task_id)
        if task.record.host is None:
            freed = retention.delete_task_files(task.record)
        self._forget(task.record)
        self._changed(TaskChange.REMOVED, task_id)
        return RemovedTask(task_id=task_id, freed_bytes=freed)

    # -- end -------------------------------------------------------------------

    async def end(self, task_id: str, grace_seconds: float | None = None, reason: str = END_REASON) -> EndedTask:
        """End a task's whole process tree and answer once it is gone; ``reason`` is recorded."""
        task = self._any(task_id)
        grace = self.settings.default_grace_seconds if grace_seconds is None else grace_seconds
        if not 0 <= grace <= self.settings.max_grace_seconds:
            raise InvalidArgumentError(
                "grace_seconds", grace_seconds, f"use 0 to {self.settings.max_grace_seconds:g} seconds"
            )
        record = task.record
        with anyio.CancelScope(shield=True):
            if task.running and not record.kill_requested:
                record.kill_requested = True
                record.end_reason = reason
                self._save([record])
            if record.host is not None:
                ended_task, ended = await self.remote.end(task, grace, reason)
                self._after_remote(task, ended)
                return ended_task
            leaders = {record.pid: task.leader()} if record.pid is not None and not task.lingering_known_empty else {}
            outcome = await end_trees(leaders, grace, self.settings.kill_wait_seconds)
            with anyio.move_on_after(self.settings.kill_wait_seconds):
                await task.exited.wait()
        if not outcome.survivors and not task.running:
            await task.settle()
        record = task.record  # another server's task: a fresh copy of its record by now
        return EndedTask(
            task_id=task_id,
            state=record.state,
            exit_code=record.exit_code,
            signal=record.signal,
            signalled_pids=outcome.signalled,
            escalated=outcome.escalated,
            survivors=[Survivor(pid=pid, command=cmd, reason=why) for pid, cmd, why in outcome.survivors],
            containment=record.containment,
            verified="" if outcome.survivors else await self._verified(record),
        )

    async def _verified(self, record: TaskRecord) -> str:
        """What an end with no survivor checked, at the task's level; at the subreaper level, also
        the orphans this server holds whose task cannot be told (they end with the server)."""
        text = VERIFIED.get(Level(record.containment), "")
        if record.containment != Level.SUBREAPER:
            return text
        leader_pids = {t.record.pid for t in self._tasks.values() if t.record.pid is not None}
        find = functools.partial(unclaimed_children, leader_pids, claimed_too=False)
        strays = await offload.run(offload.SCANS, find)
        if strays:
            text += (
                f"; {len(strays)} process(es) orphaned to this server from a task that can no longer be told "
                f"(pids {', '.join(str(p.pid) for p in strays)}) are ended when the server exits"
            )
        return text

    async def shutdown(self) -> int:
        """End every task this server owns, all at once, within a bounded time.

        Returns how many tasks still had processes to end.
        """
        with anyio.CancelScope(shield=True):
            if self._shutdown_done is not None:  # under way: answer once it is done
                await self._shutdown_done.wait()
                return 0
            self._shutdown_done = anyio.Event()
            self._shutting_down = True
            try:
                ended = await self._end_all()
            finally:
                self._shutdown_done.set()
        return ended

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def _end_all(self) -> int:
        """End the local tasks' trees and, beside them, the remote tasks not meant to outlive us."""
        live = [
            t
            for t in self._tasks.values()
            if t.record.pid is not None
            and not t.lingering_known_empty
            and not t.record.keep_running
            and t.record.host is None
        ]
        for task in live:
            if task.running:
                task.record.kill_requested = True
                task.record.end_reason = SHUTDOWN_REASON
        leaders = {t.record.pid: t.leader() for t in live if t.record.pid is not None}
        doomed = [
            t for t in self._tasks.values() if t.record.host is not None and t.running and not t.record.keep_running
        ]
        # Orphans that came to us as subreaper from a task that can no longer be told go with us.
        leader_pids = {t.record.pid for t in self._tasks.values() if t.record.pid is not None and t.record.host is None}
        strays = await offload.run(
            offload.SCANS, unclaimed_children, leader_pids | self.remote.connections.helper_pids()
        )
        async with anyio.create_task_group() as group:
            group.start_soon(self._end_remote_at_shutdown, doomed)
            outcome = await end_trees(
                leaders, self.settings.shutdown_grace_seconds, self.settings.shutdown_kill_wait_seconds, strays
            )
            with anyio.move_on_after(self.settings.shutdown_kill_wait_seconds):
                for task in live:
                    await task.exited.wait()
        for task in live:
            if not task.running:
                await task.settle()  # a cgroup still holding a survivor is not removed
        self._save([t.record for t in self._tasks.values()])
        with contextlib.suppress(RegistryError):  # reported by the registry
            await offload.run(offload.REGISTRY, self.registry.flush)
        for pid, command, reason in outcome.survivors:
            print(f"mcp-backgroundr: left running at shutdown: pid {pid} ({command}): {reason}", file=sys.stderr)
        return len(outcome.ended_tasks) + len(doomed)

    async def _end_remote_at_shutdown(self, doomed: list[Task]) -> None:
        """End the remote tasks not meant to outlive the server (as far as their hosts answer in
        time), then close the SSH connections."""
        for task in doomed:
            task.record.kill_requested, task.record.end_reason = True, SHUTDOWN_REASON
        with anyio.move_on_after(self.settings.shutdown_grace_seconds + REMOTE_SHUTDOWN_SECONDS):
            await self.remote.end_all(doomed, self.settings.shutdown_grace_seconds, SHUTDOWN_REASON)
        await self.remote.close()


class TaskChange(enum.StrEnum):
    STARTED = "started"
    ENDED = "ended"
    REMOVED = "removed"


ChangeHook = Callable[[TaskChange, str], Coroutine[Any, Any, None]]
"""Called with what changed and the task id."""


def _add_note(record: TaskRecord, note: str) -> None:
    record.end_reason = note if record.end_reason is None else f"{record.end_reason}; {note}"


def _earlier_output_advice(reason: WaitReason, status: TaskStatus, start: int) -> str | None:
    """For a wait that saw its task end without a word: where the output it wrote before is."""
    if reason is not WaitReason.EXITED or status.output or start <= status.dropped_bytes:
        return None
    return (
        f"it wrote nothing during this wait, but {start - status.dropped_bytes} bytes before it: read them with "
        f"get_task_status (the last lines, or since={status.dropped_bytes})"
    )


def _started(record: TaskRecord) -> StartedTask:
    """run_background_task's answer for a task just started."""
    return StartedTask(
        task_id=record.task_id,
        pid=record.pid,
        state=record.state,
        command=shown_command(record.command, record.task_id),
        cwd=record.cwd,
        log_path=record.log_path,
        containment=record.containment,
        host=record.host,
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
