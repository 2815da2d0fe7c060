"""Processes: spawn a task in its own session, watch its exit, find and end its tree.

A task is a process tree, not a pid. Every process of a task is found by any of:
its session or process group (the task's shell leads both), or the marker
``MCP_BACKGROUNDR_TASK_ID`` in its environment, which descendants inherit even
after ``setsid``, a double fork or ``nohup … &``. Linux does not reuse a pid
while it still names a session or group, and psutil checks a process's start
time before signalling it, so a reused pid is never signalled.

Exits are seen through pidfds on the event loop: no polling anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import signal
import subprocess
import termios
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import psutil

from .config import TASK_ID_ENV
from .errors import SpawnFailedError

SHELL = "/bin/sh"


@dataclass(frozen=True)
class Streams:
    """Where a task's standard streams go."""

    output: int
    """Descriptor for stdout and stderr: the log, or a terminal's slave side."""
    stdin: int = subprocess.DEVNULL
    """/dev/null, subprocess.PIPE, or a terminal's slave side."""
    terminal: bool = False
    """Whether ``output`` is a terminal that should become the task's controlling terminal."""


def _take_controlling_terminal() -> None:
    # Runs in the child after setsid(): stdin is the pty slave, which becomes the session's
    # terminal, so Ctrl-C sent as input interrupts the foreground job as on a real terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn(argv: Sequence[str], cwd: str, env: Mapping[str, str], streams: Streams) -> subprocess.Popen[bytes]:
    """Start ``argv`` (``/bin/sh -c command``, or the runner) as the leader of a new session.

    stdout and stderr share one descriptor, so they interleave as on a terminal.
    No other descriptor of the server is inherited.
    """
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=streams.stdin,
            stdout=streams.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_take_controlling_terminal if streams.terminal else None,
        )
    except OSError as exc:
        if exc.errno == errno.E2BIG:
            raise SpawnFailedError(
                "could not start the command: the command or an env value is too long for the kernel "
                "(at most 128 KiB each, about 2 MiB together); put a long script in a file and run that"
            ) from exc
        raise SpawnFailedError(f"could not start {SHELL} -c in {cwd}: {exc.strerror or exc}") from exc


def open_exit_handle(popen: subprocess.Popen[bytes]) -> int:
    """A pidfd for a child just spawned, taken before anything can reap it (so its pid
    cannot have been reused)."""
    return os.pidfd_open(popen.pid)


async def wait_for_exit(popen: subprocess.Popen[bytes], pidfd: int) -> int:
    """Wait, without polling, until a child exits; reap it and return its returncode.

    Closes ``pidfd``, which must come from :func:`open_exit_handle`.
    """
    try:
        if popen.returncode is None:
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return popen.wait()


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# psutil derives start times from clock ticks: equal within this, they are the same process.
START_TIME_TOLERANCE = 0.05


def same_process(pid: int, start_time: float | None) -> bool:
    """Whether ``pid`` still names the process that started at ``start_time``."""
    started = create_time(pid)
    return started is not None and start_time is not None and abs(started - start_time) < START_TIME_TOLERANCE


async def wait_until_ended(pid: int, start_time: float | None) -> None:
    """Wait, without polling, until the process with this pid and start time is gone.

    Works for any process, not only a child (a pidfd turns readable on its exit).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if same_process(pid, start_time):  # checked after opening: the pid cannot change under us
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def _is_gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


@dataclass(frozen=True)
class Leader:
    """The shell that leads a task's session and process group."""

    task_id: str
    reaped_at: float | None = None
    """When its exit was collected; after that its pid may name a new, unrelated process."""


def find_task_processes(leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
    """Every live process of the given tasks, keyed by task id.

    Args:
        leaders: each task's leader, keyed by its pid (which is also its session and group id).
    """
    wanted = {leader.task_id for leader in leaders.values()}
    found: dict[str, list[psutil.Process]] = {task_id: [] for task_id in wanted}
    own_pid = os.getpid()
    for candidate in psutil.process_iter(["environ"], ad_value=None):
        if candidate.pid == own_pid:
            continue
        task_id = _task_of(candidate, leaders, wanted)
        if task_id is not None and not _is_gone(candidate):
            found[task_id].append(candidate)
    return found


def _task_of(candidate: psutil.Process, leaders: Mapping[int, Leader], wanted: Collection[str]) -> str | None:
    environ = candidate.info.get("environ")
    if environ and environ.get(TASK_ID_ENV) in wanted:
        return str(environ[TASK_ID_ENV])
    try:
        leader = leaders.get(os.getsid(candidate.pid)) or leaders.get(os.getpgid(candidate.pid))
        if leader is None:
            return None
        # Once the leader is reaped its pid can be reused, and a new process that calls
        # setsid would lead a session of that number: only older processes are the task's.
        if leader.reaped_at is not None and candidate.create_time() >= leader.reaped_at:
            return None
    except (OSError, psutil.Error):
        return None
    return leader.task_id


def _describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "?"


@dataclass
class EndOutcome:
    """What ending a set of processes did."""

    signalled: list[int] = field(default_factory=list)
    escalated: bool = False
    survivors: list[tuple[int, str, str]] = field(default_factory=list)
    """(pid, command line, reason) of each process still alive at the end."""


async def wait_until_gone(processes: Sequence[psutil.Process], within_seconds: float) -> list[psutil.Process]:
    """Wait up to ``within_seconds`` for the processes to exit; return those still alive."""
    pidfds: list[int] = []
    try:
        for process in processes:
            with contextlib.suppress(OSError):
                pidfds.append(os.pidfd_open(process.pid))
        with anyio.move_on_after(within_seconds):
            for pidfd in pidfds:
                await anyio.wait_readable(pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
    return [process for process in processes if not _is_gone(process)]


def _signal_all(processes: Sequence[psutil.Process], signum: int, denied: dict[int, str]) -> list[int]:
    sent = []
    for process in processes:
        try:
            process.send_signal(signum)
            if signum == signal.SIGTERM:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            sent.append(process.pid)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            denied[process.pid] = "permission denied: the process belongs to another user"
    return sent


def _survivor_reason(process: psutil.Process, denied: Mapping[int, str]) -> str:
    if process.pid in denied:
        return denied[process.pid]
    status: str
    try:
        status = process.status()
    except psutil.Error:
        status = "unknown"
    if status == psutil.STATUS_DISK_SLEEP:
        return "in uninterruptible sleep (D state, usually stuck in I/O); SIGKILL takes effect when the I/O returns"
    return f"still alive after SIGKILL (status {status})"


async def end_processes(
    find: Callable[[], list[psutil.Process]],
    grace_seconds: float,
    kill_wait_seconds: float,
    found: list[psutil.Process] | None = None,
) -> EndOutcome:
    """SIGTERM everything ``find`` returns (or ``found``, when the caller has just looked),
    wait up to the grace period, SIGKILL what is left (including processes started in the
    meantime), wait again, and report survivors."""
    outcome = EndOutcome()
    denied: dict[int, str] = {}
    processes = find() if found is None else found
    if not processes:
        return outcome
    outcome.signalled.extend(_signal_all(processes, signal.SIGTERM, denied))
    remaining = await wait_until_gone(processes, grace_seconds)
    # Processes forked during the grace period are found again here.
    known = {process.pid for process in remaining}
    remaining += [process for process in find() if process.pid not in known]
    if remaining:
        outcome.escalated = True
        for pid in _signal_all(remaining, signal.SIGKILL, denied):
            if pid not in outcome.signalled:
                outcome.signalled.append(pid)
        remaining = await wait_until_gone(remaining, kill_wait_seconds)
        known = {process.pid for process in remaining}
        remaining += [process for process in find() if process.pid not in known]
    outcome.survivors = [(p.pid, _describe(p), _survivor_reason(p, denied)) for p in remaining]
    return outcome


async def end_task_trees(leaders: Mapping[int, Leader], grace_seconds: float, kill_wait_seconds: float) -> set[str]:
    """End every process of these tasks at once; return the ids of the tasks that had any."""
    if not leaders:
        return set()

    def find_all() -> list[psutil.Process]:
        return [member for group in find_task_processes(leaders).values() for member in group]

    found = find_task_processes(leaders)
    first = [member for group in found.values() for member in group]
    await end_processes(find_all, grace_seconds, kill_wait_seconds, found=first)
    return {task_id for task_id, group in found.items() if group}


OPEN_FILE_TARGET = 65_536


def raise_open_file_limit() -> None:
    """Lift the soft descriptor limit: each running task holds a pidfd.

    Capped well below typical hard limits, since tasks inherit it and some old
    programs close every descriptor up to the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass(frozen=True)
class TreeUsage:
    """What a task's processes use right now."""

    process_count: int
    rss_bytes: int
    cpu_seconds: float
    """User plus system CPU time of the live processes so far."""
    listening: list[tuple[str, int, int]]
    """(address, port, pid) of each listening TCP socket."""


def tree_usage(processes: Sequence[psutil.Process]) -> TreeUsage:
    rss, cpu, listening = 0, 0.0, set()
    count = 0
    for member in processes:
        try:
            with member.oneshot():
                rss += member.memory_info().rss
                times = member.cpu_times()
                cpu += times.user + times.system
                for conn in member.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr:
                        listening.add((conn.laddr.ip, conn.laddr.port, member.pid))
            count += 1
        except psutil.Error:
            continue
    return TreeUsage(count, rss, cpu, sorted(listening, key=lambda item: (item[1], item[0])))


def listening_by_task(task_ids: Collection[str]) -> dict[str, list[tuple[str, int, int]]]:
    """Listening TCP sockets of the given tasks, found from the system's socket table (one read)."""
    found: dict[str, list[tuple[str, int, int]]] = {}
    if not task_ids:
        return found
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return found
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.pid or not conn.laddr:
            continue
        try:
            task_id = psutil.Process(conn.pid).environ().get(TASK_ID_ENV)
        except psutil.Error:
            continue
        if task_id is not None and task_id in task_ids:
            found.setdefault(task_id, []).append((conn.laddr.ip, conn.laddr.port, conn.pid))
    return found
