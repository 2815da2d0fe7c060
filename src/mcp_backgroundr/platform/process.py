"""Processes: spawn a task in its own session, watch its exit, measure its tree.

Shared by both platform backends (POSIX and psutil); what differs, seeing an exit and
reading sockets, is asked of the backend (a pidfd or a thread; the machine's socket table or
each process's). Which processes make up a task, and how they are all ended, is the
containment package's job.
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
from dataclasses import dataclass

import psutil

from ..config import TASK_ID_ENV
from ..errors import SpawnFailedError, too_long_for_the_kernel
from . import backend


@dataclass(frozen=True)
class Streams:
    """Where a task's standard streams go."""

    output: int
    """Descriptor for stdout and stderr: the log, or a terminal's slave side."""
    stdin: int = subprocess.DEVNULL
    """/dev/null, subprocess.PIPE, or a terminal's slave side."""
    terminal: bool = False
    """Whether ``output`` is a terminal that should become the task's controlling terminal."""
    join: Callable[[], None] | None = None
    """What the child runs before exec to enter its containment (its cgroup)."""

    def before_exec(self) -> Callable[[], None] | None:
        if self.join is None and not self.terminal:
            return None
        join, terminal = self.join, self.terminal

        def prepare() -> None:
            # Runs in the child after setsid(), before exec: joining the cgroup here means
            # nothing the task ever starts can be outside it.
            if join is not None:
                join()
            if terminal:
                # stdin is the pty slave, which becomes the session's terminal, so Ctrl-C sent
                # as input interrupts the foreground job as on a real terminal.
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        return prepare


# Linux gives each session its own scheduling group (``kernel.sched_autogroup_enabled``,
# on by default): a task, whose own session keeps its tree together, weighs as much as the whole
# server, event loop and log capper included, and a thread's nice value counts only inside its
# session. Ten tasks running ``yes`` took ten elevenths of the CPU the server needed to cap their
# logs: each overshot its 1 MiB cap about 50 times. With their sessions at nice 5 (a third of the
# server's weight) they overshot about 3 to 8 times (nice 2: about 24 times). The price: under
# contention a task also gets a third of what a session at nice 0 gets (a 200 MB write took 2.4
# times as long at load average 7); with a CPU to spare it runs as fast as before.


def _run_in_background(pid: int, niceness: int) -> None:
    """Lower the priority of the session ``pid`` leads, where the system has autogroups (see the note above)."""
    if not niceness:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as autogroup:
            autogroup.write(str(niceness))
    except OSError:  # no autogroups (not Linux, or turned off), or the task is gone
        return


def spawn(
    argv: Sequence[str], cwd: str, env: Mapping[str, str], streams: Streams, niceness: int = 0
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (``/bin/sh -c command``, or the runner) as the leader of a new session, at
    ``niceness`` (the session's: see the note on ``_run_in_background``).

    stdout and stderr share one descriptor, so they interleave as on a terminal.
    No other descriptor of the server is inherited.
    """
    popen = _popen(argv, cwd, env, streams)
    _run_in_background(popen.pid, niceness)
    return popen


def _popen(argv: Sequence[str], cwd: str, env: Mapping[str, str], streams: Streams) -> subprocess.Popen[bytes]:
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
            preexec_fn=streams.before_exec(),
        )
    except subprocess.SubprocessError as exc:  # the step before exec failed (its cgroup is gone)
        raise SpawnFailedError(f"could not start the command in its containment: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.E2BIG:
            raise too_long_for_the_kernel() from exc
        raise SpawnFailedError(f"could not start {argv[0]} in {cwd}: {exc.strerror or exc}") from exc


def open_exit_handle(popen: subprocess.Popen[bytes]) -> int | None:
    """What :func:`wait_for_exit` waits on, taken right after the spawn (the backend's: a pidfd, a pipe)."""
    return backend.current().exit_handle(popen)


async def wait_for_exit(popen: subprocess.Popen[bytes], handle: int | None) -> int:
    """Wait, without polling, until a child exits; reap it and return its returncode (closes ``handle``)."""
    return await backend.current().wait_for_exit(popen, handle)


def a_child_has_ended() -> bool:
    """Whether a child of this process has ended and is not yet waited for (one ``waitid`` that
    leaves it to be waited for; True where that cannot be asked). A waitpid per task costs a list
    of 100 tasks a hundred system calls each call; this one answers for all of them."""
    if not hasattr(os, "waitid") or not hasattr(os, "WNOWAIT"):
        return True
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no children at all
        return False
    except OSError:
        return True


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# psutil derives start times from clock ticks: equal within this, they are the same process.
START_TIME_TOLERANCE = 0.05


def holds_its_pid(pid: int, start_time: float | None) -> bool:
    """Whether the process that started at ``start_time`` still holds ``pid``, running or a zombie
    (its number, and its session's, cannot be reused until it is collected)."""
    started = create_time(pid)
    return started is not None and start_time is not None and abs(started - start_time) < START_TIME_TOLERANCE


def same_process(pid: int, start_time: float | None) -> bool:
    """Whether ``pid`` still names the process that started at ``start_time``, running: a zombie
    has ended (only its exit status waits for a parent that may never collect it, such as a
    container's process 1 without an init, which a dead server's tasks are left to)."""
    if start_time is None:
        return False
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            same = abs(process.create_time() - start_time) < START_TIME_TOLERANCE
            return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def wait_until_ended(pid: int, start_time: float | None) -> None:
    """Wait until the process with this pid and start time is gone (any process, not only a child)."""
    await backend.current().wait_until_ended(pid, start_time)


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


Socket = tuple[str, int, int]
"""A listening TCP socket: (address, port, pid)."""


def tree_usage(processes: Sequence[psutil.Process], sockets: Sequence[Socket]) -> TreeUsage:
    """What ``processes`` use; their listening sockets are picked from ``sockets`` (one read of
    the socket table for the whole machine, see :func:`listening_sockets`). Blocking: it reads
    a few /proc files per process."""
    rss, cpu = 0, 0.0
    members = set()
    for member in processes:
        try:
            with member.oneshot():
                rss += member.memory_info().rss
                times = member.cpu_times()
                cpu += times.user + times.system
            members.add(member.pid)
        except psutil.Error:
            continue
    listening = {socket for socket in sockets if socket[2] in members}
    return TreeUsage(len(members), rss, cpu, sorted(listening, key=lambda item: (item[1], item[0])))


def listening_sockets() -> list[Socket]:
    """Every listening TCP socket of the machine with its process (one read of the socket table,
    which costs what the machine holds: run it in a worker thread)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []
    return [
        (conn.laddr.ip, conn.laddr.port, conn.pid)
        for conn in connections
        if conn.status == psutil.CONN_LISTEN and conn.pid and conn.laddr
    ]


def sockets_by_task(sockets: Sequence[Socket], task_ids: Collection[str] | None = None) -> dict[str, list[Socket]]:
    """``sockets`` of the given tasks (``None``: of every task), found by the marker in the
    environment of each listening process."""
    found: dict[str, list[Socket]] = {}
    for socket in sockets:
        try:
            task_id = psutil.Process(socket[2]).environ().get(TASK_ID_ENV)
        except psutil.Error:
            continue
        if task_id is not None and (task_ids is None or task_id in task_ids):
            found.setdefault(task_id, []).append(socket)
    return found


def listening_by_task(task_ids: Collection[str]) -> dict[str, list[Socket]]:
    """Listening TCP sockets of the given tasks (one read of the sockets, the backend's way)."""
    if not task_ids:
        return {}
    by_task = backend.current().socket_table()[1]
    return {task_id: sockets for task_id, sockets in by_task.items() if task_id in task_ids}


def kill_session(leader: int) -> None:
    """SIGKILL every process of the session that ``leader`` leads (a child of ours, not yet reaped,
    so its number is not reused meanwhile): its own process group at once, then each other member,
    such as the command a ``keep_running`` task's runner started in a group of its own. Scans the
    process table: call it from a worker thread."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)
    for candidate in psutil.process_iter():
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to look at
            if candidate.pid != leader and os.getsid(candidate.pid) == leader:
                os.kill(candidate.pid, signal.SIGKILL)


def own_sockets(processes: Sequence[psutil.Process]) -> list[Socket]:
    """The listening TCP sockets of these processes, asked of each one."""
    found: list[Socket] = []
    for member in processes:
        with contextlib.suppress(psutil.Error):
            found += [
                (conn.laddr.ip, conn.laddr.port, member.pid)
                for conn in member.net_connections(kind="tcp")
                if conn.status == psutil.CONN_LISTEN and conn.laddr
            ]
    return found
