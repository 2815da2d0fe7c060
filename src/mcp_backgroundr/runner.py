"""The supervising wrapper of tasks that outlive their server or restart.

Run as ``python -I runner.py RUN_RECORD RESTART MAX_RESTARTS REAPER COMMAND [LOG MAX_LOG_BYTES [HEAD_METHOD]]``,
it leads the task's session (with REAPER ``subreaper``, orphaned descendants come back to it,
and it collects them), keeps LOG under MAX_LOG_BYTES when given (while no server runs too),
runs ``/bin/sh -c COMMAND`` in it (see :func:`shell_argv`; stdout and stderr
stay the log the server opened), restarts it by policy with exponential backoff,
and records every run in RUN_RECORD (JSON, replaced atomically). So the exit of a
``keep_running`` task is known even when it ended while no server was running.
It exits the way the command last did (same code, or the same signal), so a
server that is its parent reads the result as if there were no wrapper.

It imports only the standard library: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING


def _sibling(name: str) -> ModuleType:
    """A standard-library-only module of this package (``name`` its path from here, without
    ``.py``), loaded from its file: run as ``python -I runner.py``, the package itself is not
    importable."""
    spec = importlib.util.spec_from_file_location(
        f"_backgroundr_runner_{name.replace('/', '_')}", Path(__file__).parent / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING or __package__:
    from . import exits
    from .logs import holes
    from .platform import heads
else:
    exits, holes, heads = _sibling("exits"), _sibling("logs/holes"), _sibling("platform/heads")

SHELL = "/bin/sh"
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 30.0
"""A run that lasted this long resets the backoff."""
RESTART_POLICIES = ("no", "on-failure", "always")
TASK_ENV_DEFAULTS = {"PYTHONUNBUFFERED": "1"}
"""Under a task's environment, local or remote: what it inherits and what the caller sets win."""
PR_SET_CHILD_SUBREAPER = 36
CAPPER_STOP_SECONDS = 2.0
"""How long the runner, its command ended, waits for a drop of its log's head under way."""
STDIN = 0
RUN_RECORD_MODE = 0o600
"""The run record is the user's own, as the log beside it is."""
INPUT_CLOSE_SIGNAL = signal.SIGUSR1
"""Sent to the runner to close its task's input home (end of input)."""


_RESERVED = "! { } [[ ]] case do done elif else esac fi for function if in select then time until while"
_BUILTINS = (
    ". : [ alias bg break cd chdir command continue echo eval exec exit export false fc fg getopts hash jobs kill "
    "local printf pwd read readonly return set shift test times trap true type ulimit umask unalias unset wait"
)
_SHELL_WORDS = frozenset(f"{_RESERVED} {_BUILTINS}".split(" "))
"""Reserved words and builtins of sh: ``exec`` in front of them would change what runs, or fail."""
_PLAIN_WORD = re.compile(r"[\w./~+:@%,][\w./~+:@%,-]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
_OPERATOR = re.compile(r"[;&|()\n\r]")
"""Outside quotes, these make a list, a pipeline, a subshell or a background job of a command."""


def _words(command: str) -> list[tuple[int, str]] | None:
    """The words of ``command`` as written (with their offsets), or None when it is not one simple
    command: an operator outside quotes, or an unterminated quote. Redirections (``2>&1``,
    ``>|``) stay words."""
    words: list[tuple[int, str]] = []
    start: int | None = None
    quote = ""
    index = 0
    while index < len(command):
        char = command[index]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "\\":
            index += 1
        elif quote == '"':
            quote = "" if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif _OPERATOR.match(char) and not (char in "&|" and command[index - 1 : index] in ("<", ">")):
            return None
        if char in " \t" and not quote:
            if start is not None:
                words.append((start, command[start:index]))
            start = None
        elif start is None:
            start = index
        index += 1
    if quote:
        return None
    if start is not None:
        words.append((start, command[start:]))
    return words


def exec_command(command: str, path: str | None = None) -> str:
    """``command`` for ``sh -c``, with ``exec`` before the program when it is one simple command, so
    the program replaces the shell: the task's main process is the program itself (one process, not
    two), and a signal meant for it (Ctrl-C on a terminal) does not end the shell instead.

    Anything else (pipelines, lists, ``&``, subshells, builtins, reserved words, a program name with
    quotes or expansions) is left as it is. Leading assignments stay in front (``A=1 exec prog``
    exports them to the program, as ``A=1 prog`` does). A program named without a ``/`` that is
    not on ``path`` (the task's PATH; default this process's) keeps its shell too, so the error
    reads ``prog: not found`` as the user wrote it, not ``exec: prog: not found``."""
    words = _words(command)
    if not words:
        return command
    assignments = 0
    while assignments < len(words) and _ASSIGNMENT.match(words[assignments][1]):
        assignments += 1
    if assignments == len(words):
        return command
    offset, program = words[assignments]
    if not _PLAIN_WORD.fullmatch(program) or program in _SHELL_WORDS:
        return command
    if "/" not in program and shutil.which(program, path=path) is None:
        return command
    return f"{command[:offset]}exec {command[offset:]}"


def shell_argv(command: str, path: str | None = None) -> list[str]:
    """How a task's command is run: ``/bin/sh -c``, the program exec'd in its place when it can be
    (``path``: the PATH the task runs with; default this process's, as in the runner)."""
    return [SHELL, "-c", exec_command(command, path)]


def input_home(record_path: str) -> str:
    """The FIFO beside the run record that a keep_running task with stdin reads its input from."""
    return record_path.removesuffix(".status") + ".input"


class _InputHome:
    """A FIFO the runner holds open for writing, so its task never reads end-of-input when a
    server exits: any server, or the CLI, writes to it; closing it on purpose ends the input."""

    def __init__(self, path: str) -> None:
        self.path = path
        # The server hands it over as our stdin, open for reading and writing: it is held from our
        # first instant, so what was written before we ran outlives the server that wrote it.
        handed_over = os.path.samestat(os.fstat(STDIN), os.stat(path))
        self.hold: int | None = STDIN if handed_over else os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def reader(self) -> int | None:
        """A read end for the next run's stdin (None once the input is closed)."""
        if self.hold is None:
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        return fd

    def close(self) -> None:
        if self.hold is not None:
            os.close(self.hold)
            self.hold = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass
class RunRecord:
    """How a supervised task's runs went, as its runner records them in RUN_RECORD (``TASK.status``)."""

    state: str = "running"
    """running, or the final state: completed, failed or killed."""
    exit_code: int | None = None
    signal: str | None = None
    restarts: int = 0
    next_start_at: float | None = None
    ended_at: float | None = None
    runs: list[str] = field(default_factory=list)
    """How each finished run ended, oldest first (at most the last few)."""


def read_run_record(path: str) -> RunRecord | None:
    """The run record a runner wrote, or None when there is none (yet)."""
    try:
        with open(path, encoding="utf-8") as file:
            return RunRecord(**json.load(file))
    except (OSError, ValueError, TypeError):
        return None


def _write_run_record(path: str, record: RunRecord) -> None:
    temporary = f"{path}.tmp"
    with os.fdopen(
        os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, RUN_RECORD_MODE), "w", encoding="utf-8"
    ) as file:
        json.dump(asdict(record), file)
    os.replace(temporary, path)


def next_backoff(previous: float | None, run_seconds: float) -> float:
    """Delay before the next start: doubling from 0.5 s to 30 s, reset by a healthy run."""
    if previous is None or run_seconds >= HEALTHY_RUN_SECONDS:
        return FIRST_BACKOFF_SECONDS
    return min(previous * 2, MAX_BACKOFF_SECONDS)


def should_restart(policy: str, returncode: int, restarts: int, max_restarts: int) -> bool:
    if restarts >= max_restarts:
        return False
    return policy == "always" or (policy == "on-failure" and returncode != 0)


class _Runner:
    def __init__(self, record_path: str, policy: str, max_restarts: int, command: str) -> None:
        self.record_path = record_path
        self.policy = policy
        self.max_restarts = max_restarts
        self.command = command
        self.record = RunRecord()
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.spawning = False
        self.exits_pending = False
        home = input_home(record_path)
        self.input = _InputHome(home) if os.path.exists(home) else None

    def on_input_close(self, _signum: int, _frame: object) -> None:
        if self.input is not None:
            self.input.close()

    def on_stop_signal(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            # Someone signalled the runner alone (a person with kill): pass it on to the command's
            # process group, as a shell passes it to a job.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signum)

    def on_child_exit(self, _signum: int, _frame: object) -> None:
        """Collect exited orphans (the task's own shell is left to ``wait``)."""
        if self.spawning:  # the new child may have exited already, before it could be told apart
            self.exits_pending = True
            return
        while True:
            try:
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if exited is None or (self.child is not None and exited.si_pid == self.child.pid):
                return
            try:
                os.waitpid(exited.si_pid, os.WNOHANG)
            except ChildProcessError:
                return

    def run(self) -> int:
        backoff: float | None = None
        while True:
            began = time.monotonic()
            reader = self.input.reader() if self.input is not None else None
            closed = self.input is not None and reader is None
            self.spawning = True
            self.child = _spawn_in_own_group(shell_argv(self.command), subprocess.DEVNULL if closed else reader)
            self.spawning = False
            _give_terminal_to(self.child.pid)
            if reader is not None:
                os.close(reader)
            if self.exits_pending:
                self.exits_pending = False
                self.on_child_exit(signal.SIGCHLD, None)
            self.record.next_start_at = None
            _write_run_record(self.record_path, self.record)
            returncode = self.child.wait()
            self.record.runs = [*self.record.runs[-9:], exits.describe(returncode)]
            if self.stopping.is_set() or not should_restart(
                self.policy, returncode, self.record.restarts, self.max_restarts
            ):
                return self._finish(returncode)
            backoff = next_backoff(backoff, time.monotonic() - began)
            self.record.next_start_at = time.time() + backoff
            _write_run_record(self.record_path, self.record)
            if self.stopping.wait(backoff):  # ended while it waited: no restart was made
                return self._finish(returncode)
            self.record.restarts += 1
            print(
                f"--- mcp-backgroundr: run {self.record.restarts + 1} (restart {self.record.restarts} of "
                f"{self.max_restarts}); the previous run ended with {exits.describe(returncode)} ---",
                flush=True,
            )

    def _finish(self, returncode: int) -> int:
        stopped = self.stopping.is_set()
        self.record.next_start_at = None
        self.record.ended_at = time.time()
        ended = exits.of(returncode, asked_to_end=stopped)
        self.record.state, self.record.exit_code, self.record.signal = ended.state, ended.exit_code, ended.signal
        _write_run_record(self.record_path, self.record)
        return returncode


def _spawn_in_own_group(argv: list[str], stdin: int | None) -> subprocess.Popen[bytes]:
    """Start the command in a process group of its own, in this runner's session: a command that
    signals its group (``trap 'kill 0' EXIT``, ``kill -9 0``: how scripts end the jobs they
    started) must not end the runner that restarts it and records its exit. (A runner on a
    remote host may have Python 3.9, before ``process_group``.)"""
    if sys.version_info >= (3, 11):  # noqa: UP036 (see above)
        return subprocess.Popen(argv, stdin=stdin, process_group=0)
    return subprocess.Popen(argv, stdin=stdin, preexec_fn=os.setpgrp)


def _give_terminal_to(group: int) -> None:
    """On a terminal (a pty task), make the command's group the foreground one, as a shell does for
    a job, so that it reads its input and gets Ctrl-C. This runner may be in the background by then
    (an earlier run had the terminal): SIGTTOU is blocked for the call. The command may have tried
    to read before it was in the foreground and been stopped: it is continued."""
    if not os.isatty(STDIN):
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(STDIN, group)
        os.killpg(group, signal.SIGCONT)
    except OSError:  # it has ended already
        return
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0)


def _keep_log_capped(log_path: str, cap: int, method: str) -> Callable[[], None]:
    """Keep the task's log under its cap from this process, whether a server runs or not, dropping
    its head by the platform backend's ``method`` (see platform/heads.py). Returns the function
    that stops it, which waits for a drop under way to finish: a rewrite cut short by the
    runner's exit would leave the log empty."""
    stopping = threading.Event()

    def run() -> None:
        retries = holes.Retries()
        while not stopping.is_set():
            try:
                holes.keep_capped(Path(log_path), cap, stopping, heads.dropper(method), retries)
            except OSError as exc:  # the log is the runner's stdout: say it there, once a cause
                cause, pause = retries.failed(exc)
                if cause is not None:
                    with contextlib.suppress(OSError):  # a full disk takes no line either
                        print(
                            f"--- mcp-backgroundr: this log is not capped for now ({cause}); trying again ---",
                            flush=True,
                        )
                stopping.wait(pause)

    capper = threading.Thread(target=run, name="log cap", daemon=True)
    capper.start()

    def stop() -> None:
        stopping.set()
        capper.join(CAPPER_STOP_SECONDS)
        if not capper.is_alive():  # a last look: what the task wrote as it ended, no look may have seen
            with contextlib.suppress(OSError):
                holes.enforce(Path(log_path), cap, heads.dropper(method))

    return stop


def main(argv: list[str]) -> int:
    record_path, policy, max_restarts, reaper, command, *log_cap = argv
    stop_capping = (
        _keep_log_capped(log_cap[0], int(log_cap[1]), log_cap[2] if len(log_cap) > 2 else heads.PUNCH)
        if log_cap  # LOG MAX_LOG_BYTES [HEAD_METHOD]
        else None
    )
    runner = _Runner(record_path, policy, int(max_restarts), command)
    signal.signal(INPUT_CLOSE_SIGNAL, runner.on_input_close)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, runner.on_stop_signal)
    if reaper == "subreaper":
        _become_subreaper()
        signal.signal(signal.SIGCHLD, runner.on_child_exit)
    returncode = runner.run()
    if stop_capping is not None:
        stop_capping()
    return _end_as(returncode)


def _end_as(returncode: int) -> int:
    """End the way the command last did: its exit code, or its signal (a server that is the parent
    reads the runner's end as the command's). SIGKILL takes no handler, so none is reset for it; a
    signal that does not end this process leaves it ending with 128 + its number, as a shell says."""
    if returncode >= 0:
        return returncode
    signum = -returncode
    with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP cannot be handled
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
