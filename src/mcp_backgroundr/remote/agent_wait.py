"""On the remote host: wait for a hosted task (exit, a matching line, a port), and grep its log.

Standard library only. A wait blocks in ``select`` on two descriptors: a pidfd of the
task's runner (readable at its exit) and, on Linux, an inotify watch on its log (readable
when it is written to), both reached through ``os`` and ``ctypes``. Where either is
missing, the wait looks at the log and the runner every STAT_INTERVAL_SECONDS instead,
only while the wait runs. A port offers no wake-up anywhere: it is probed every
PORT_PROBE_SECONDS while a wait asks for one, as the server does locally.

Patterns are matched with Python's ``re`` (RE2 is not in the standard library), which
backtracks: ``(a+)+$`` against a line of 30 ``a`` and a ``b`` runs for minutes, in C, where no
Python signal handler can stop it. So a call that matches runs in a forked child
(:func:`bounded`), whose matching of each stretch of the log (at most CHUNK bytes) may use
MATCH_CPU_SECONDS of CPU: past that, SIGVTALRM (default action) ends the child, and the agent
answers that the pattern is too slow, naming the budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..logs import files
from ..logs.lines import CHUNK, Line, LineReader, line_start, new_match
from ..logs.matches import GrepCollector
from .agent_patterns import UNTRANSLATED, as_python
from .agent_procs import listened_on, listening, port_look

STAT_INTERVAL_SECONDS = 0.1
EXIT_LOOK_SECONDS = 1.0
"""Where a runner offers no pidfd (not Linux, or Linux before 5.3), how often a watch for exits
looks at it (only while the watch runs)."""
PORT_PROBE_SECONDS = 0.05
PARTIAL_LINE_QUIET_SECONDS = 0.5
"""An unterminated line that matches counts once nothing more was written for this long."""
MATCH_CPU_SECONDS = 2.0
"""CPU time a pattern may take to match one stretch of a log (at most CHUNK bytes) on a remote host."""
_IN_MODIFY = 0x00000002


def inotify_on(path: str) -> int | None:
    """An inotify descriptor that turns readable when ``path`` is written to (None off Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd >= 0:
            if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) >= 0:
                return int(fd)
            os.close(fd)
    return None


class _Wakeups:
    """Descriptors that turn readable when the log is written to or the runner exits."""

    def __init__(self, log: str, runner_pid: int) -> None:
        self.fds: list[int] = []
        self.inotify: int | None = None
        self.pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self.pidfd = os.pidfd_open(runner_pid)
            self.fds.append(self.pidfd)
        self.inotify = inotify_on(log)
        if self.inotify is not None:
            self.fds.append(self.inotify)

    @property
    def event_driven(self) -> bool:
        return self.inotify is not None and self.pidfd is not None

    def wait(self, seconds: float) -> bool:
        """Sleep until a wake-up or ``seconds``; return whether something woke it."""
        if not self.fds:
            time.sleep(seconds)
            return False
        ready = select.select(self.fds, [], [], seconds)[0]
        if self.inotify is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.inotify, 65536):
                    pass
        return bool(ready)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
        if self.inotify is not None:
            # Closing an inotify descriptor waits for the kernel (an SRCU grace period, 10-20 ms),
            # which the answer need not wait for.
            threading.Thread(target=os.close, args=(self.inotify,), daemon=True).start()


class _Lines:
    """Reads a log forward from an offset, matching each line (rendered) against a pattern, the
    way the server does locally (``logs/lines.py``): only kept bytes, even when the cap drops
    some during a read, and a line longer than a chunk in pieces."""

    def __init__(self, log: str, start: int, pattern: re.Pattern[str]) -> None:
        self.log, self.boundary, self.pattern = log, start, pattern
        self.offset: int | None = None
        """Where the next scan reads from: at first, the start of the line under way at ``start``
        (a line begun before the wait matches by what was written after it: ``lines.new_match``)."""

    def scan(self) -> tuple[str, int, bool] | None:
        """(line, cursor after it, complete) of the next matching line written so far."""
        try:
            fd = os.open(self.log, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if self.offset is None:
                self.offset = line_start(fd, self.boundary)
            reader = LineReader(fd, self.offset)
            with _matching():
                while not reader.caught_up:
                    _budget()
                    for line in reader.read(CHUNK):
                        self.offset = reader.offset
                        if found := new_match(line.raw, self.boundary - line.start, self.pattern.search):
                            return files.matched_part(*found), line.end, not line.last
                    self.offset = reader.offset
            return None
        finally:
            os.close(fd)


def compiled(text: str) -> re.Pattern[str]:
    """A pattern the server checked with RE2, for Python's ``re``, read as RE2 reads it (see
    ``agent_patterns.as_python``); one that cannot be is refused with a line saying why."""
    try:
        return re.compile(as_python(text))
    except (re.error, ValueError) as exc:
        raise ValueError(
            f"pattern {text!r} is valid for RE2 but means something else, or nothing, to Python's re on this "
            f"host ({exc}); {UNTRANSLATED}"
        ) from exc


def _ticks(interval: float, deadline: float) -> Iterator[float]:
    while (left := deadline - time.monotonic()) > 0:
        yield min(left, interval)


def wait(
    log: str,
    runner_pid: int,
    alive: Callable[[], bool],
    request: dict[str, Any],
    members: Callable[[int, str], list[int]],
) -> dict[str, Any]:
    """Block until the first of: the runner exits (with a port: and every process the task started),
    a line matches, a process of the task listens on the port (on any address), the timeout."""
    deadline = time.monotonic() + float(request["timeout"])
    # None is no pattern; an empty one is honoured: it matches every line (logs -f waits for any).
    pattern = compiled(request["pattern"]) if request.get("pattern") is not None else None
    lines = _Lines(log, int(request["since"]), pattern) if pattern is not None else None
    port = request.get("port")
    wakeups = _Wakeups(log, runner_pid)
    partial: tuple[str, int, bool] | None = None
    woken = True
    try:
        interval = STAT_INTERVAL_SECONDS if not wakeups.event_driven else float(request["timeout"])
        if port is not None:
            interval = PORT_PROBE_SECONDS
        for pause in _ticks(interval, deadline):
            found = lines.scan() if lines else None
            if found and (found[2] or (found == partial and not woken)):
                # A complete line, or an unterminated one (a prompt) after a quiet moment.
                return {"reason": "pattern", "line": found[0], "cursor": found[1]}
            partial = found
            # A wait for a port goes on while what the task started lives on (`server &`).
            if not alive() and (port is None or not members(runner_pid, request["task_id"])):
                last = lines.scan() if lines else None
                if last:
                    return {"reason": "pattern", "line": last[0], "cursor": last[1]}
                return {"reason": "exited"}
            if port is not None and listened_on(port):
                owned = {item[1] for item in listening(members(runner_pid, request["task_id"]))}
                if port in owned:
                    return {"reason": "port"}
            woken = wakeups.wait(min(pause, PARTIAL_LINE_QUIET_SECONDS) if partial else pause)
        if port is None:
            return {"reason": "timeout"}
        # Who holds the port says why it timed out (and a task that listens just now is ready).
        look = port_look(port, members(runner_pid, request["task_id"]))
        return {"reason": "port"} if look["holder"] == "task" else {"reason": "timeout", "port_look": look}
    finally:
        wakeups.close()


def until_exit(runners: dict[str, tuple[int, Callable[[], bool]]], seconds: float, wake: int) -> list[str]:
    """Block until a runner (task id -> (pid, alive)) exits, ``wake`` turns readable (the server
    has a new request) or ``seconds`` pass; the task ids whose runner is gone."""
    deadline = time.monotonic() + seconds
    pidfds: dict[int, str] = {}
    try:
        for task_id, (pid, _) in runners.items():
            with contextlib.suppress(OSError, AttributeError):
                pidfds[os.pidfd_open(pid)] = task_id
        # Looked at once the pidfds are open: an exit before this is seen here, one after wakes select.
        gone = [task_id for task_id, (_, alive) in runners.items() if not alive()]
        every_exit_wakes = len(pidfds) == len(runners)
        while not gone and (left := deadline - time.monotonic()) > 0:
            pause = left if every_exit_wakes else min(left, EXIT_LOOK_SECONDS)
            ready = select.select([*pidfds, wake], [], [], pause)[0]
            if wake in ready:
                break
            gone = [pidfds[fd] for fd in ready]
            gone += [t for t, (_, alive) in runners.items() if t not in gone and not every_exit_wakes and not alive()]
        return gone
    finally:
        for fd in pidfds:
            os.close(fd)


def _numbered_lines(fd: int, start: int, size: int) -> Iterator[Line]:
    """Each line from ``start`` to ``size`` (its ``index``: how many lines came before it from
    ``start``), kept bytes only (a very long line comes in pieces), each stretch of CHUNK bytes
    matched within its CPU budget."""
    reader = LineReader(fd, start, size)
    while not reader.caught_up:
        _budget()
        yield from reader.read(CHUNK)


def grep(log: str, request: dict[str, Any]) -> dict[str, Any]:
    """Lines of the log from ``since`` that match, numbered, within the budget."""
    pattern, budget = compiled(request["pattern"]), int(request["budget"])
    dropped = files.dropped_bytes(Path(log))
    last = request.get("last")
    found = GrepCollector(pattern.search, budget, None if last is None else int(last), bool(request.get("raw")))
    try:
        fd = os.open(log, os.O_RDONLY)
    except FileNotFoundError:
        gone = files.gone_note(Path(log))
        return {"text": "", "matches": 0, "shown": 0, "size": 0, "resume_at": None, "dropped": 0, "gone": gone}
    try:
        size = os.fstat(fd).st_size
        since = min(max(int(request.get("since") or 0), dropped), size)
        number = 1 + _newlines(fd, dropped, since)
        with _matching():
            for line in _numbered_lines(fd, since, size):
                found.offer(line, number + line.index)
    finally:
        os.close(fd)
    return {
        "text": "\n".join(found.kept),
        "matches": found.matches,
        "shown": len(found.kept),
        "size": size,
        "resume_at": found.resume_at,
        "dropped": dropped,
    }


def _newlines(fd: int, start: int, end: int) -> int:
    count, offset = 0, start
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def _budget() -> None:
    """Allow MATCH_CPU_SECONDS of CPU from now (armed again for each stretch of the log)."""
    signal.setitimer(signal.ITIMER_VIRTUAL, MATCH_CPU_SECONDS)


@contextlib.contextmanager
def _matching() -> Iterator[None]:
    """Matching under way (budgeted by each stretch's ``_budget``); no budget once it is done."""
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def bounded(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work``'s answer, computed in a forked child whose matching is bounded (see the module
    docstring); when the budget ended it, an answer that says so (``slow_pattern``)."""
    reader, writer = os.pipe()
    deadline = signal.getitimer(signal.ITIMER_REAL)[0]  # the call's alarm, which a child does not inherit
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(reader)
            if deadline:
                signal.setitimer(signal.ITIMER_REAL, deadline)
            data = json.dumps(work()).encode()
            while data:
                data = data[os.write(writer, data) :]
            os.close(writer)  # the answer is complete: the agent reads its end now
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        data = answer.read()
    if data:  # the child's exit is not waited for: it costs tens of ms (an inotify descriptor's close)
        return dict(json.loads(data))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGVTALRM:
        return {"error": f"the pattern took more than {MATCH_CPU_SECONDS:g} s", "slow_pattern": MATCH_CPU_SECONDS}
    return {"error": f"the matching process ended with no answer (wait status {status})"}
