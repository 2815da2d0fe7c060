"""Matching big log ranges in processes of the server's own, out of its interpreter lock.

A wait from cursor 0 of a 1 GiB log, or a grep of it, runs RE2 and counts newlines over a
thousand 1 MiB chunks: calls in C that keep the interpreter lock for a whole chunk. Made by the
server's threads, they held the lock about half the time under the stall benchmark's loads, and
the event loop waited for it to answer every other client (docs/benchmarks.md 15, eighth pass).
So a step over a log range more than FAR_BYTES long is made by a matching process
(``python -m mcp_backgroundr.logs.matching``) at a lower CPU priority than the server's: the
server's thread sends it the step (a function and its arguments, pickled: it is our own child)
and waits for the answer with the lock released. A short range is matched in the thread, as
before: a round trip costs more than matching it.

At most PROCESSES run, each making one step at a time; they are started on the first far step
and kept until the server's shutdown ends them (:meth:`MatchingProcesses.stop`), and die with the
server however it dies (stdin closed; on Linux ``PR_SET_PDEATHSIG``). A matching process that
ends during a step (killed) is replaced and the step made again, once; if that fails too, the
call fails with a one-line error and the server goes on.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar, TypeVarTuple

from .. import offload
from ..errors import BackgroundrError, warn
from ..platform.containment import die_with_server
from . import helpers_log
from .capping import PASSED_ON
from .lines import CHUNK

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

FAR_BYTES = 4 * CHUNK
"""A step over more of a log than this is made by a matching process; a shorter one in the server's thread."""
PROCESSES = 2
"""The most matching processes at once (steps beyond wait for one): the machines we run on have few cores."""
STEP_SECONDS = 60.0
"""The longest a step may take in a matching process (a 1 MiB step takes milliseconds): past it the
process is taken as stuck, killed, and the call fails."""
STOP_SECONDS = 2.0
"""How long a matching process gets to end once its stdin is closed, before it is killed."""
_LENGTH_BYTES = 8


class MatchingError(BackgroundrError):
    """The matching process ended during a step, twice."""


class _Gone(Exception):
    """The matching process ended, or stopped answering, during a step."""


class _Worker:
    """One matching process, used by one thread at a time."""

    def __init__(self, errors: Path | None) -> None:
        """``errors``: the helpers' log, its stderr (never the server's: see logs/helpers_log.py)."""
        stderr = helpers_log.stderr_for_helper(errors)
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={name: os.environ[name] for name in PASSED_ON if name in os.environ},
                start_new_session=True,  # a scheduling group of its own (see _lower_priority)
            )
        finally:
            os.close(stderr)

    def call(self, function: Callable[..., _T], args: tuple[object, ...]) -> _T:
        request = pickle.dumps((function, args))
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        try:
            _write_frame(self.popen.stdin, request)
            deadline = time.monotonic() + STEP_SECONDS
            (size,) = _unpack_length(_read_exactly(self.popen.stdout.fileno(), _LENGTH_BYTES, deadline))
            ok, answer = pickle.loads(_read_exactly(self.popen.stdout.fileno(), size, deadline))
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError) as exc:
            raise _Gone(str(exc) or type(exc).__name__) from exc
        if not ok:
            raise answer
        return answer  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Close its stdin (it ends on its own), and kill it if it has not within STOP_SECONDS."""
        with contextlib.suppress(OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        try:
            self.popen.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        assert self.popen.stdout is not None
        self.popen.stdout.close()


class MatchingProcesses:
    """The server's matching processes: :meth:`run` makes a step in one of them."""

    def __init__(self, processes: int = PROCESSES) -> None:
        self._free = threading.BoundedSemaphore(processes)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._running: dict[int, _Worker] = {}
        self._starting = 0
        self._errors: Path | None = None

    def write_errors_to(self, path: Path) -> None:
        """Give the matching processes started from now on ``path`` for their stderr (/dev/null until then)."""
        self._errors = path

    def run(self, function: Callable[[*_Args], _T], *args: *_Args) -> _T:
        """``function(*args)`` in a matching process (blocking: called in a worker thread, which
        waits without the interpreter lock). A process that ends meanwhile is replaced, and the
        step made again once; an exception of ``function`` is raised here."""
        with self._free:
            for attempt in range(2):
                worker = self._take()
                try:
                    answer = worker.call(function, args)
                except _Gone as gone:
                    self._discard(worker)
                    if attempt:
                        raise MatchingError(
                            f"the matching process ended during the call ({gone}); call again"
                        ) from gone
                    warn(f"a matching process ended ({gone}){helpers_log.where_said(self._errors)}; starting another")
                    continue
                except BaseException:
                    self._give_back(worker)
                    raise
                self._give_back(worker)
                return answer
        raise AssertionError("unreachable")

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._starting += 1
        try:
            worker = _Worker(self._errors)
        except OSError as exc:  # out of processes or descriptors
            raise MatchingError(f"a matching process could not be started ({exc}); call again") from exc
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._running[worker.popen.pid] = worker
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._running.pop(worker.popen.pid, None)
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)
        with contextlib.suppress(ProcessLookupError):
            worker.popen.kill()
        worker.stop()

    def pids(self) -> set[int] | None:
        """The matching processes (helpers whose exits this module collects); None while one is being started."""
        with self._lock:
            return None if self._starting else set(self._running)

    def stop(self) -> None:
        """End every matching process there is (a server's shutdown, once its tasks are ended: a
        step after it starts another, which ends when the server does). Blocking."""
        with self._lock:
            idle, self._idle = self._idle, []
            busy = [worker for worker in self._running.values() if worker not in idle]
        for worker in busy:  # its thread hears it ended, and collects it
            with contextlib.suppress(ProcessLookupError):
                worker.popen.kill()
        for worker in idle:
            self._discard(worker)


MATCHERS = MatchingProcesses()
"""This server's matching processes."""


def far(remaining: int) -> bool:
    """Whether a step over ``remaining`` bytes of a log is made in a matching process."""
    return remaining > FAR_BYTES


async def stop() -> None:
    """End the matching processes (a server's shutdown, once its tasks are ended)."""
    await offload.run(offload.SCANS, MATCHERS.stop)


def _unpack_length(data: bytes) -> tuple[int]:
    return (int.from_bytes(data, "big"),)


def _write_frame(out: IO[bytes], data: bytes) -> None:
    out.write(len(data).to_bytes(_LENGTH_BYTES, "big") + data)
    out.flush()


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    """``size`` bytes from ``fd``; EOFError if it closes first, TimeoutError past ``deadline``."""
    parts: list[bytes] = []
    poll = select.poll()  # not select(): a server's descriptors may number past 1024
    poll.register(fd, select.POLLIN)
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                raise TimeoutError(f"no answer within {STEP_SECONDS:g}s")
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            raise EOFError("it ended")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


AUTOGROUP_NICENESS = 19
"""The nice value of a matching process's session (Linux autogroups): the lowest."""


def _lower_priority() -> None:
    """Below the server's event loop, and below every other session (this is our own helper: no
    user's task is lowered). A session is one scheduling group on Linux (autogroups): in the
    server's, a matching process took the CPU the loop needed (a whole core on two, scanning a
    1 GiB log); in a session of its own at autogroup nice 19 it gets what nobody else wants."""
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(AUTOGROUP_NICENESS))
    with contextlib.suppress(OSError):
        below_loop = os.getpriority(os.PRIO_PROCESS, os.getppid()) + offload.BACKGROUND_NICENESS
        os.setpriority(os.PRIO_PROCESS, 0, min(19, max(os.getpriority(os.PRIO_PROCESS, 0), below_loop)))


def main() -> None:
    """A matching process: make the steps the server sends, one at a time, until its stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in a terminal is the server's to handle
    parent = os.getppid()
    die_with_server()
    if os.getppid() != parent:  # the server died before it could be asked to kill us
        return
    _lower_priority()
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer
    while True:
        try:
            (size,) = _unpack_length(_read_exactly(stdin, _LENGTH_BYTES, None))
            function, args = pickle.loads(_read_exactly(stdin, size, None))
        except EOFError:
            return
        try:
            reply = pickle.dumps((True, function(*args)))
        except Exception as exc:  # the step's own error, raised again in the server
            try:
                reply = pickle.dumps((False, exc))
            except Exception:
                reply = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        _write_frame(stdout, reply)


if __name__ == "__main__":
    main()
