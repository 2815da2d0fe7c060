"""Capping logs in a process of its own, out of the server's interpreter lock.

A writer as fast as `yes` under a small cap needs hundreds of looks a second at its log (a stat,
and often a hole punch), and each look takes the interpreter lock several times, once after each
system call. Made by threads of the server, ten such logs took the lock tens of thousands of
times a second from the event loop, and a look preempted while holding it kept every client
waiting (docs/benchmarks.md 15, sixth pass). So a server keeps its logs capped through a child
process (``python -m mcp_backgroundr.logs.capping``) that runs the same :class:`LogCapper`: the
server tells it which logs to keep under which cap, and hears back which it could not.

The child reads one JSON array a line on its stdin (``["watch", path, cap]``, ``["held", path,
pid, start time]`` once the task that writes the log has started, ``["ended", path]`` once the
server has recorded that task's end, ``["forget", path]``, and ``["release", ""]`` at a server's
shutdown, which lets go of the tasks that outlived it), writes
``"ready"`` on its stdout once it can cap, then one line for each log it cannot cap (``[path,
note]``). A task started while it gets ready (a server's first 0.1 to 0.5 s) waits for it
(:meth:`CapperProcess.ready`): `yes` writes 64 MiB in less than that.

Its stdin closes when the server ends it, having ended its tasks, and when the server dies (a
SIGKILL, a crash): the tasks of a dead server run on, and write on, until the next server ends
them. So once its stdin closes the child goes on capping the logs whose task still runs (by pid
and start time), and ends when none does: caps hold with no server for every task, not only for
``keep_running`` ones (whose runners cap their own logs). The end of each task still held then,
which no server recorded, it writes down beside the log (``TASK.end-seen``) for the next server:
when it saw the task end, or, for one already gone, that it had ended by the server's death.

It has none of the server's stdin, stdout or stderr, which would keep the client waiting for them
to close meanwhile: its stderr is the helpers' log (logs/helpers_log.py). It leaves the server's
process group: a signal to the group (``timeout``, a shell's job control) is the server's to
handle, which ends its tasks, their logs capped meanwhile, and then this process; and a server
leaving does not start it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .. import offload
from ..config import HOME_ENV, PLATFORM_ENV
from ..errors import warn
from ..models import end_seen_path
from ..platform import process as processes
from . import helpers_log
from .logcap import LogCapper

READY_SECONDS = 10.0
"""The longest a start waits for the capping process to be ready; past it, the log is capped once it is."""
RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
"""A capping process that ends RESTARTS times within this long is not started again."""
RESTART_PAUSE_SECONDS = 0.2
"""How long after a capping process ended on its own the next one is started."""
STOP_SECONDS = 2.0
"""How long the capping process gets to end once told to (its stdin closed), before it is killed."""
PASSED_ON = ("PATH", "PYTHONPATH", HOME_ENV, PLATFORM_ENV)
"""All of the server's environment the capping process gets: it needs no more, and any process of
the same user (a task) can read a process's environment, the server's excepted (non-dumpable: it
may hold the HTTP token)."""
LOOK_SECONDS = 2.0
ANSWER_SECONDS = 10.0
"""The server asks the capping process every LOOK_SECONDS whether it still caps; one that does not
answer within ANSWER_SECONDS (stopped by SIGSTOP, stuck) is killed, and started again."""
_READY = "ready"
_ASK = "ask"
_ANSWER = "capping"
_WATCH = "watch"
_HELD = "held"
_FORGET = "forget"
_ENDED = "ended"
_RELEASE = "release"


class CapperProcess:
    """The server's side of the capping process: :meth:`watch` and :meth:`forget` as
    :class:`LogCapper`'s, carried out by the child while :meth:`run` runs."""

    def __init__(self, on_failure: Callable[[Path, str], None], errors: Path | None = None) -> None:
        """``on_failure`` is told when a log cannot be kept under its cap (it is no longer looked at),
        or could not be for a while (it is tried again); ``errors``: the helpers' log, the capping
        process's stderr (/dev/null without one)."""
        self.on_failure = on_failure
        self._errors = errors
        self._commands: list[bytes] = []
        self._pending = anyio.Event()
        self._watched: dict[str, int] = {}
        """Every log kept under its cap, with its cap: what a new capping process is told."""
        self._holders: dict[str, tuple[int, float | None]] = {}
        """The process (pid, start time) that writes each watched log, once its task has started."""
        self._gave_up: str | None = None
        """Why the capping process is not started again, once it is not."""
        self._process: anyio.abc.Process | None = None
        self._starting = False
        self._ready = anyio.Event()
        self._stopping = False
        self._leaving = False
        """Whether the server is leaving: a capping process that ends is not started again."""
        self._answered = anyio.Event()

    async def ready(self) -> None:
        """Wait, at most READY_SECONDS, until the capping process caps what it is told to (or has failed)."""
        with anyio.move_on_after(READY_SECONDS):
            await self._ready.wait()

    async def stop(self) -> None:
        """End the capping process (a server's shutdown, once its tasks are ended), waiting for it
        at most STOP_SECONDS before it is killed: a server may exit at once afterwards. It ends at
        once: what tasks outlived the shutdown (stuck in I/O; the shutdown said so) it lets go of."""
        self._stopping = True
        if self._process is not None:
            await _stop(self._process, release=True)

    def leaving(self) -> None:
        """The server is leaving (its shutdown is under way, or about to be): the capping process
        caps on until :meth:`stop`, but one that ends meanwhile is not started again (a signal to
        the whole process group, say, meant for the server too)."""
        self._leaving = True

    @property
    def gave_up(self) -> str | None:
        """Why no log is capped any longer, once the capping process is not started again."""
        return self._gave_up

    def watch(self, path: Path, cap: int) -> None:
        """Keep ``path`` under ``cap`` from now on (never waits: the child is told in the background),
        or say at once that it cannot be, once the capping process is not started again."""
        if self._gave_up is not None:
            self.on_failure(path, self._gave_up)
            return
        self._watched[str(path)] = cap
        self._tell(_command(_WATCH, str(path), cap))

    def held_by(self, path: Path, pid: int, started: float | None) -> None:
        """The task whose log ``path`` is (watched already) has started as ``pid`` at ``started``:
        should this server die, the capping process caps the log for as long as that process runs."""
        if str(path) in self._watched:
            self._holders[str(path)] = (pid, started)
            self._tell(_command(_HELD, str(path), pid, started))

    def end_recorded(self, path: Path) -> None:
        """The server has recorded the end of the task whose log ``path`` is: should it die, its end
        is no news to the next server (the log stays capped, for what the task left running)."""
        if self._holders.pop(str(path), None) is not None:
            self._tell(_command(_ENDED, str(path)))

    def forget(self, path: Path) -> None:
        self._holders.pop(str(path), None)
        if self._watched.pop(str(path), None) is not None:
            self._tell(_command(_FORGET, str(path)))

    def _tell(self, command: bytes) -> None:
        self._commands.append(command)
        self._pending.set()

    def watched_helpers(self) -> set[int] | None:
        """The child's pid, which its own watcher reaps (an orphan reaper must leave it); None
        while it is being started."""
        if self._starting:
            return None
        return {self._process.pid} if self._process is not None and self._process.returncode is None else set()

    async def run(self) -> None:
        """Run the capping process until cancelled. One that ends on its own (killed, crashed) is
        started again and told every log kept so far; after RESTARTS ends within RESTART_WINDOW_SECONDS,
        or a start that fails, it is not, and every log, kept or new, is reported not capped."""
        ends: list[float] = []
        while not self._stopping:
            code = await self._run_once()
            if self._stopping or self._leaving:
                return
            # A signal that ended it may have been sent to the server as well, which the server
            # hears a moment later (systemd's SIGTERM to its whole cgroup): not a failure then.
            await anyio.sleep(RESTART_PAUSE_SECONDS)
            if self._stopping or self._leaving:
                return
            now = time.monotonic()
            ends = [*[at for at in ends if now - at < RESTART_WINDOW_SECONDS], now]
            if len(ends) >= RESTARTS:
                self._give_up(
                    f"its log is no longer capped (the capping process ended {len(ends)} times within "
                    f"{RESTART_WINDOW_SECONDS:g}s, last with {code})"
                )
                return
            warn(f"the capping process ended ({code}){helpers_log.where_said(self._errors)}; starting it again")
            self._commands = [_command(_WATCH, path, cap) for path, cap in self._watched.items()]
            self._commands += [_command(_HELD, path, *holder) for path, holder in self._holders.items()]
            self._pending.set()

    def _give_up(self, note: str) -> None:
        self._gave_up = note
        watched, self._watched, self._holders = self._watched, {}, {}
        for path in sorted(watched):
            self.on_failure(Path(path), note)

    async def _run_once(self) -> int | None:
        """One capping process, from its start until it ends; answers how it ended."""
        self._starting = True
        try:
            errors = await offload.run(offload.LOGS, helpers_log.stderr_for_helper, self._errors)
            try:
                self._process = await anyio.open_process(
                    [sys.executable, "-m", __name__],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    env={name: os.environ[name] for name in PASSED_ON if name in os.environ},
                )
            finally:
                os.close(errors)
        except BaseException as exc:
            self._give_up(f"its log is not capped (the capping process could not start: {exc})")
            self._ready.set()  # no start waits for it any longer
            raise
        finally:
            self._starting = False
        process = self._process
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._send, process)
                group.start_soon(self._ask_until_silent, process)
                await self._hear(process)
                group.cancel_scope.cancel()
            with anyio.move_on_after(STOP_SECONDS):  # its stdout closed as it ended: how it ended
                await process.wait()
            return process.returncode
        finally:
            self._ready.set()
            with anyio.CancelScope(shield=True):
                await _stop(process)

    async def _send(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            commands, self._commands = self._commands, []
            try:
                await process.stdin.send(b"".join(commands))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # it ended, or is being stopped: what it no longer caps is heard of in run()

    async def _ask_until_silent(self, process: anyio.abc.Process) -> None:
        """Kill the capping process once it does not answer (see ANSWER_SECONDS): run() starts
        another. A stopped one caps nothing, and nothing else would tell."""
        while True:
            await anyio.sleep(LOOK_SECONDS)
            self._answered = anyio.Event()
            self._tell(_command(_ASK, ""))
            with anyio.move_on_after(ANSWER_SECONDS):
                await self._answered.wait()
            if not self._answered.is_set():
                warn(f"the capping process gave no answer in {ANSWER_SECONDS:g}s")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                return

    async def _hear(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        buffered = b""
        async for data in process.stdout:
            *lines, buffered = (buffered + data).split(b"\n")
            for line in lines:
                if (said := json.loads(line)) in (_READY, _ANSWER):
                    (self._ready if said == _READY else self._answered).set()
                    continue
                path, note, *retried = said
                if not retried:  # it no longer looks at the log
                    self._watched.pop(path, None)
                    self._holders.pop(path, None)
                self.on_failure(Path(path), note)


def _command(command: str, path: str, *values: int | float | None) -> bytes:
    return json.dumps([command, path, *values]).encode() + b"\n"


async def _stop(process: anyio.abc.Process, release: bool = False) -> None:
    """Close the child's stdin (it ends on its own), and kill it if it has not within STOP_SECONDS;
    ``release``: let go of the tasks it would cap on for (else it caps their logs until they end)."""
    if process.stdin is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            if release:
                await process.stdin.send(_command(_RELEASE, ""))
            await process.stdin.aclose()
    with anyio.move_on_after(STOP_SECONDS):
        await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _say(said: object) -> None:
    with contextlib.suppress(OSError):  # the server is gone: nobody to tell
        sys.stdout.write(json.dumps(said) + "\n")
        sys.stdout.flush()


def _say_failed(path: Path, note: str) -> None:
    _say([str(path), note])


def _say_retried(path: Path, note: str) -> None:
    _say([str(path), note, True])


def _obey(capper: LogCapper, holders: dict[str, tuple[int, float | None]], line: str) -> None:
    command, path, *values = json.loads(line)
    if command == _FORGET:
        holders.pop(path, None)
        capper.forget(Path(path))
    elif command == _HELD:
        holders[path] = (values[0], values[1])
    elif command == _ENDED:
        holders.pop(path, None)
    elif command == _ASK:
        _say(_ANSWER)
    elif command == _RELEASE:
        holders.clear()
    else:
        try:
            capper.watch(Path(path), values[0])
        except OSError as exc:  # e.g. out of inotify watches
            _say_failed(Path(path), f"its log is not capped ({exc.strerror or exc})")


async def _cap_while_held(capper: LogCapper, holders: dict[str, tuple[int, float | None]]) -> None:
    """The server has gone: cap each log until the process that writes it has ended (told by the
    kernel where the platform can: the next server ends a dead server's tasks, and this process
    must not outlive them by more than a moment). Those are the tasks whose end the server had not
    recorded: when each ended is written down for the next server, the moment it is seen (or, for
    one already gone, such as a terminal's that hung up with the server, that it had ended by the
    moment this process found the server gone)."""
    server_gone_at = time.time()

    async def until_ended(path: str, pid: int, started: float | None) -> None:
        outlived_its_server = await anyio.to_thread.run_sync(processes.same_process, pid, started)
        await processes.wait_until_ended(pid, started)
        seen_at = time.time() if outlived_its_server else server_gone_at
        await anyio.to_thread.run_sync(_write_end_seen, path, seen_at, outlived_its_server)
        capper.forget(Path(path))

    async with anyio.create_task_group() as group:
        for path, (pid, started) in holders.items():
            group.start_soon(until_ended, path, pid, started)


def _write_end_seen(log_path: str, at: float, seen: bool) -> None:
    """Write down that the main process of the task whose log is ``log_path`` was seen to end at
    ``at`` (``seen``), or had ended by then, when its server died (nothing, when it cannot be
    written: the next server then says it does not know when)."""
    path = end_seen_path(log_path)
    with contextlib.suppress(OSError):
        with open(f"{path}.tmp", "w", encoding="utf-8") as file:
            json.dump({"ended_at": at, "seen": seen}, file)
        os.replace(f"{path}.tmp", path)


async def _serve(parent: int) -> None:
    capper = LogCapper(on_trouble=_say_retried)
    holders: dict[str, tuple[int, float | None]] = {}
    _say(_READY)
    async with anyio.create_task_group() as group:
        group.start_soon(capper.run)
        if os.getppid() == parent:  # else the server died before it could tell us anything
            stdin: Any = anyio.wrap_file(sys.stdin)
            async for line in stdin:
                _obey(capper, holders, line)
        await _cap_while_held(capper, holders)
        group.cancel_scope.cancel()


def main() -> None:
    """The capping process: keep logs capped as the server says, until its stdin closes and no
    task whose log it caps runs any longer."""
    # A signal to the server's process group (a ^C in a terminal, `timeout`, a shell's `kill %1`)
    # is the server's to handle: it ends its tasks, whose logs this process caps meanwhile, then
    # this process. SIGINT is ignored too, should a ^C come before the group is left.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    anyio.run(_serve, os.getppid())


if __name__ == "__main__":
    main()
