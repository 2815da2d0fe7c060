"""On the remote host: the agent that starts, reads, waits on, feeds and ends hosted tasks.

The server sends this package (this module, ``agent_procs``, ``agent_wait``, the runner and
the log readers, standard library only) to the remote host once, as a zip kept in the
remote user's state directory, and then runs one short ``python3`` per call with a JSON
request on stdin and a JSON answer on stdout. A task is started as ``python3 ZIP task ID``:
the runner of local ``keep_running`` tasks, leading its own session, writing the log and
each run's exit status under ``STATE/hosted/``. Nothing here outlives a call except that
runner; every call bounds itself with an alarm, so a dropped connection cannot leave it behind.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import runner
from ..errors import BackgroundrError
from ..logs import files
from . import agent_procs, agent_wait

HOSTED = "hosted"
RUNNER_READY_SECONDS = 2.0
SESSION_IDLE_SECONDS = 600
"""A serving agent that hears nothing for this long exits (its server may be gone unseen)."""
ALARM_MARGIN_SECONDS = 2
"""The alarm that bounds a call fires this long after its deadline (the call answers at it)."""
Request = dict[str, Any]


class Hosted:
    """The files of one hosted task: log, runner status, start record, input FIFO, end marker."""

    def __init__(self, state: str, task_id: str) -> None:
        if not task_id.isalnum():
            raise BackgroundrError(f"task id {task_id!r} is not one of ours")
        self.task_id = task_id
        self.base = os.path.join(state, HOSTED, task_id)
        self.log, self.status, self.meta = self.base + ".log", self.base + ".status", self.base + ".json"
        self.fifo, self.ended = runner.input_home(self.status), self.base + ".end"
        """The runner's input home: a FIFO it holds open and hands each run as stdin."""

    def started(self) -> dict[str, Any]:
        try:
            with open(self.meta, encoding="utf-8") as file:
                return dict(json.load(file))
        except (OSError, ValueError) as exc:
            raise BackgroundrError(f"task {self.task_id} is not known on this host (its record is gone)") from exc

    def alive(self) -> bool:
        meta = self.started()
        return agent_procs.is_alive(int(meta["pid"]), meta.get("ticks"))

    def outcome(self) -> dict[str, Any]:
        """How the task stands: running, or how it ended, as its runner recorded it."""
        run = runner.read_run_record(self.status)
        alive = self.alive()
        answer: dict[str, Any] = {"alive": alive, "restarts": run.restarts if run else 0}
        answer["next_start_at"] = run.next_start_at if run else None
        if alive:
            return answer | {"state": "running"}
        if run is not None and run.state != "running":
            return answer | {
                "state": run.state,
                "exit_code": run.exit_code,
                "signal": run.signal,
                "ended_at": run.ended_at,
            }
        # The runner itself is gone without recording an exit: SIGKILLed, or the host restarted.
        killed = os.path.exists(self.ended)
        return answer | {
            "state": "killed" if killed else "failed",
            "exit_code": None,
            "signal": None,
            "ended_at": _mtime(self.status) or time.time(),
            "end_reason": None
            if killed
            else "its runner is gone without recording an exit (killed, or the host restarted)",
        }


PRIVATE_DIRECTORY_MODE = 0o700
"""The state directory and its hosted tasks' directory: the user's own, as the server's are."""


def _private_directory(path: str) -> None:
    """Make ``path`` (and what is missing above it) and keep it the user's own, as the server
    keeps its state directory: one made by an earlier agent, or above the bootstrap's, included."""
    os.makedirs(path, mode=PRIVATE_DIRECTORY_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIRECTORY_MODE)


def _write_private(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path``, readable by the user alone, replacing it whole."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(
        os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, files.LOG_FILE_MODE), "w", encoding="utf-8"
    ) as file:
        json.dump(data, file)
    os.replace(temporary, path)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def prune(state: str, keep_days: float) -> None:
    """Delete the files of hosted tasks that ended more than ``keep_days`` ago."""
    directory = os.path.join(state, HOSTED)
    cutoff = time.time() - keep_days * 86400
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if not name.endswith(".json"):
            continue
        hosted = Hosted(state, name[: -len(".json")])
        run = runner.read_run_record(hosted.status)
        if run is not None and run.state != "running" and (run.ended_at or time.time()) < cutoff:
            with contextlib.suppress(BackgroundrError, OSError):
                _delete(hosted)


class Refused(BackgroundrError):
    """The server's policy, applied on this host, refuses the request (``rule`` names it)."""

    def __init__(self, rule: str, what: str) -> None:
        super().__init__(what)
        self.rule = rule


def _checked_cwd(cwd: str, roots: list[str]) -> str:
    """``cwd``, or with the policy's ``allowed_cwd`` roots (as written: ``~`` is this host's home),
    its resolved path if under one (the directory checked is the one the task runs in)."""
    if not roots:
        return cwd
    resolved = os.path.realpath(cwd)
    for root in roots:
        base = os.path.realpath(os.path.expanduser(root))
        if resolved == base or resolved.startswith(base.rstrip("/") + "/"):
            return resolved
    shown = cwd if resolved == cwd else f"{cwd} (resolves to {resolved})"
    raise Refused("allowed_cwd", f"cwd {shown} is not under {', '.join(roots)}")


def start(state: str, bundle: str, request: Request) -> dict[str, Any]:
    prune(state, float(request.get("keep_days", 7)))
    hosted = Hosted(state, request["task_id"])
    asked = os.path.expanduser(request.get("cwd") or "~")
    home = "" if os.path.isabs(asked) else os.path.expanduser("~")
    cwd = _checked_cwd(os.path.join(home, asked), request.get("cwd_roots") or [])
    if not os.path.isdir(cwd):
        taken = f" (a relative cwd is taken from the home directory there, {home})" if home else ""
        raise BackgroundrError(
            f"cwd {asked!r} is not a directory on this host{taken}; pass one that exists, or omit cwd"
        )
    _private_directory(os.path.dirname(hosted.base))
    log_fd = os.open(hosted.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, files.LOG_FILE_MODE)
    stdin: int = subprocess.DEVNULL
    if request.get("stdin"):
        # Handed over as the runner's stdin, open both ways: held from its first instant.
        os.mkfifo(hosted.fifo, 0o600)
        stdin = os.open(hosted.fifo, os.O_RDWR | os.O_NONBLOCK)
    given = runner.TASK_ENV_DEFAULTS | dict(os.environ) | dict(request.get("env") or {})  # null: unset
    env = {key: value for key, value in given.items() if value is not None} | {agent_procs.TASK_ID_ENV: hosted.task_id}
    _write_private(
        hosted.meta,
        {
            "command": request["command"],
            "restart": request.get("restart", "no"),
            "max_restarts": request.get("max_restarts", 0),
            "cwd": cwd,
            "max_log_bytes": request.get("max_log_bytes", 0),
        },
    )
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", bundle, "task", state, hosted.task_id],
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)
        if stdin != subprocess.DEVNULL:
            os.close(stdin)
    _write_private(
        hosted.meta,
        hosted.started() | {"pid": child.pid, "ticks": agent_procs.start_ticks(child.pid), "at": time.time()},
    )
    return {"pid": child.pid, "cwd": cwd, "log_path": hosted.log, "containment": _containment()}


def _containment() -> str:
    """The containment level a hosted task gets here (the levels the server names locally): on
    Linux its runner is a child subreaper, so what leaves the session and drops the marker stays
    in its tree; elsewhere the weakest level (``agent_procs`` knows only the runner's process group)."""
    return "subreaper" if sys.platform == "linux" else "marker"


def run_task(state: str, task_id: str) -> int:
    """The task's runner (this process leads its session), capping its log as it goes. With an
    input home (a FIFO beside its status file) the runner holds it open and hands it to each run."""
    hosted = Hosted(state, task_id)
    meta = hosted.started()
    cap = int(meta.get("max_log_bytes") or 0)
    # The runner caps the log as a local runner does (logs/holes.py), punching holes: Linux only.
    log_cap = [hosted.log, str(cap)] if cap > 0 and sys.platform == "linux" else []
    # As child subreaper (Linux), the runner gets back what its task orphans, as the server does.
    reaper = "subreaper" if _containment() == "subreaper" else "plain"
    return runner.main([hosted.status, meta["restart"], str(meta["max_restarts"]), reaper, meta["command"], *log_cap])


def status(state: str, request: Request) -> dict[str, Any]:
    """How the task stands, a bounded slice of its log, its processes and their usage."""
    hosted = Hosted(state, request["task_id"])
    answer = hosted.outcome() | processes(hosted)
    budget, writer_alive = int(request["budget"]), answer["alive"] or bool(answer["pids"])
    if request.get("since") is None:
        floor = int(request.get("floor") or 0)
        lines = int(request.get("lines", 50))
        piece = files.read_tail(
            Path(hosted.log), lines, budget, writer_alive=writer_alive, floor=floor, raw=bool(request.get("raw"))
        )
    else:
        piece = files.read_forward(
            Path(hosted.log), int(request["since"]), budget, writer_alive=writer_alive, raw=bool(request.get("raw"))
        )
    answer["slice"] = {
        "text": piece.text,
        "cursor": piece.cursor,
        "size": piece.size,
        "truncated": piece.truncated,
        "truncation": piece.truncation,
        "dropped": piece.dropped,
    }
    return answer


def processes(hosted: Hosted) -> dict[str, Any]:
    """The task's live processes on this host, the ports they listen on and what they use."""
    meta = hosted.started()
    pids = agent_procs.members(int(meta["pid"]), hosted.task_id, meta.get("ticks"))
    return {"pids": pids, "listening": agent_procs.listening(pids)} | agent_procs.usage(pids)


def send_input(state: str, request: Request) -> dict[str, Any]:
    hosted = Hosted(state, request["task_id"])
    if not os.path.exists(hosted.fifo):
        raise BackgroundrError(
            f"task {hosted.task_id} has no open stdin: "
            "start tasks that need input with run_background_task's stdin=true"
        )
    cursor = files.log_size(Path(hosted.log))
    data = request["text"].encode()
    fd = os.open(hosted.fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.set_blocking(fd, True)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
    if request.get("close"):
        # The runner takes the signal once its handler is in place, which it is by the time it
        # has written its status file; just after a start, look briefly for that file.
        deadline = time.monotonic() + RUNNER_READY_SECONDS
        while not os.path.exists(hosted.status) and time.monotonic() < deadline:
            time.sleep(agent_procs.SETTLE_STEP_SECONDS)
        with contextlib.suppress(ProcessLookupError):  # the runner has ended: nothing reads the input
            os.kill(int(hosted.started()["pid"]), runner.INPUT_CLOSE_SIGNAL)
    return {"bytes_written": len(data), "cursor": cursor}


def end(state: str, request: Request) -> dict[str, Any]:
    """End the whole trees of one task (``task_id``) or several at once (``task_ids``)."""
    every = [Hosted(state, task_id) for task_id in request.get("task_ids") or [request["task_id"]]]
    leaders: dict[str, int] = {}
    started: dict[str, int | None] = {}
    for hosted in every:
        meta = hosted.started()
        leaders[hosted.task_id] = int(meta["pid"])
        started[hosted.task_id] = meta.get("ticks")
        if hosted.alive():
            fd = os.open(hosted.ended, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, files.LOG_FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(request.get("reason") or "")
    since = agent_procs.earliest(started)
    given = sys.stdin.buffer
    hurry = HurryOnInput(given) if request.get("hurry_on_input") and isinstance(given, io.BufferedReader) else None
    grace, kill_wait = float(request["grace"]), float(request["kill_wait"])
    ended = agent_procs.end(leaders, grace, kill_wait, since, hurry, started)
    if "task_ids" in request:
        return ended | {"tasks": {hosted.task_id: hosted.outcome() for hosted in every}}
    return ended | every[0].outcome()


class HurryOnInput:
    """The hurry a server sends on an end's input (a call of its own) when it is leaving: the line
    ``{"hurry": SECONDS}``, after which the grace under way lasts at most SECONDS more. Read without
    blocking, what the request's read buffered included."""

    def __init__(self, source: io.BufferedReader) -> None:
        self._source, self._read = source, b""
        os.set_blocking(source.fileno(), False)

    def __call__(self) -> float | None:
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            self._read += self._source.read1(65536) or b""
        line, ended, self._read = self._read.partition(b"\n")
        if not ended:
            self._read = line
            return None
        try:
            return float(json.loads(line)["hurry"])
        except (ValueError, KeyError, TypeError):
            return None


def remove(state: str, request: Request) -> dict[str, Any]:
    """Delete a finished task's files (``task_id``), or those of several that the server forgot
    (``task_ids``: one still running, or unknown here, is skipped); the bytes freed. A task whose
    record is gone here was removed already (by a call whose answer was lost): what is left goes."""
    if "task_ids" not in request:
        hosted = Hosted(state, request["task_id"])
        return {"freed_bytes": _delete(hosted) if os.path.exists(hosted.meta) else _unlink(hosted)}
    freed = 0
    for task_id in request["task_ids"]:
        with contextlib.suppress(BackgroundrError):
            freed += _delete(Hosted(state, task_id))
    return {"freed_bytes": freed}


def _delete(hosted: Hosted) -> int:
    meta = hosted.started()
    if hosted.alive() or agent_procs.members(int(meta["pid"]), hosted.task_id, meta.get("ticks")):
        raise BackgroundrError(f"task {hosted.task_id} is still running; end it with end_background_task first")
    return _unlink(hosted)


def _unlink(hosted: Hosted) -> int:
    """Delete the task's files; the bytes freed on disk, counted as for a local task: the blocks of each file."""
    freed = 0
    for path in (hosted.log, hosted.status, hosted.fifo, hosted.ended, hosted.meta):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        freed += info.st_blocks * 512 if stat.S_ISREG(info.st_mode) else 0
        os.unlink(path)
    return freed


def check(state: str, request: Request) -> dict[str, Any]:
    """How each of several tasks stands (for list_tasks and re-adoption), in one call."""
    answers = {}
    for task_id in request["task_ids"]:
        try:
            answers[task_id] = Hosted(state, task_id).outcome()
        except BackgroundrError as exc:
            answers[task_id] = {"state": "failed", "end_reason": str(exc), "alive": False}
    return {"tasks": answers}


def left(state: str, request: Request) -> dict[str, Any]:
    """How many processes each of several finished tasks left running (for list_tasks), in one look
    at the process table; a task that runs, or is not known here, is left out."""
    leaders: dict[str, int] = {}
    started: dict[str, int | None] = {}
    for task_id in request["task_ids"]:
        with contextlib.suppress(BackgroundrError):
            hosted = Hosted(state, task_id)
            meta = hosted.started()
            if not hosted.alive():
                leaders[task_id] = int(meta["pid"])
                started[task_id] = meta.get("ticks")
    found = agent_procs.members_by_task(leaders, agent_procs.earliest(started), started) if leaders else {}
    return {"tasks": {task_id: len(pids) for task_id, pids in found.items()}}


def wait(state: str, request: Request) -> dict[str, Any]:
    if request.get("pattern") is not None:
        return agent_wait.bounded(functools.partial(_safe, functools.partial(_wait, state, request)))
    return _wait(state, request)


def _wait(state: str, request: Request) -> dict[str, Any]:
    hosted = Hosted(state, request["task_id"])
    meta = hosted.started()
    size = files.existing_size(Path(hosted.log))
    if size is None and request.get("pattern") is not None:
        raise BackgroundrError(files.no_pattern_can_match(request["task_id"], Path(hosted.log)))
    start = (size or 0) if request.get("since") is None else int(request["since"])
    request = request | {"since": start}
    members = functools.partial(agent_procs.members, since=meta.get("ticks"))
    found = agent_wait.wait(hosted.log, int(meta["pid"]), hosted.alive, request, members)
    answer = status(state, request | {"since": None, "floor": start, "lines": request["max_lines"]})
    return answer | {"wait": found}


OPERATIONS: dict[str, Callable[[str, Request], dict[str, Any]]] = {
    "status": status,
    "input": send_input,
    "end": end,
    "remove": remove,
    "check": check,
    "left": left,
    "wait": wait,
}


def _answer(state: str, bundle: str, request: Request) -> dict[str, Any]:
    operation = request.get("op")
    if operation == "start":
        return start(state, bundle, request)
    if operation == "grep":
        hosted = Hosted(state, request["task_id"])
        found = agent_wait.bounded(functools.partial(_safe, functools.partial(agent_wait.grep, hosted.log, request)))
        return found if "error" in found else found | hosted.outcome() | processes(hosted)
    if operation in OPERATIONS:
        return OPERATIONS[operation](state, request)
    raise BackgroundrError(f"unknown operation {operation!r}: the server and this agent do not match")


def _safe_answer(state: str, bundle: str, request: Request) -> dict[str, Any]:
    return _safe(lambda: _answer(state, bundle, request))


def _safe(answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return answer()
    except Refused as exc:
        return {"error": str(exc), "refused_by": exc.rule}
    except (BackgroundrError, OSError, ValueError, KeyError) as exc:
        return {"error": str(exc) if isinstance(exc, BackgroundrError) else f"{type(exc).__name__}: {exc}"}


def _reply(answer: dict[str, Any]) -> None:
    answer["now"], answer["python"] = time.time(), sys.executable
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def _collect_children(_signum: int, _frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


class _Requests:
    """The request lines a serving agent reads from its stdin, unbuffered by Python: a watch
    must know whether a new request is waiting, in the pipe (select) or read already (here)."""

    def __init__(self, fd: int) -> None:
        self.fd, self._read = fd, b""

    def readline(self) -> bytes:
        while b"\n" not in self._read:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self._read = self._read, b""
                return line
            self._read += chunk
        line, _, self._read = self._read.partition(b"\n")
        return line + b"\n"

    def waiting(self) -> bool:
        return bool(self._read)


def watch(state: str, request: Request, requests: _Requests) -> dict[str, Any]:
    """Block until a runner of ``task_ids`` exits, the server sends another line (it has more tasks
    to watch) or ``timeout`` passes; how the tasks that ended stand."""
    runners = {}
    for task_id in request["task_ids"]:
        hosted = Hosted(state, task_id)
        try:
            runners[task_id] = (int(hosted.started()["pid"]), hosted.alive)
        except BackgroundrError:
            runners[task_id] = (0, lambda: False)  # its record is gone: check says how it stands
    gone = [] if requests.waiting() else agent_wait.until_exit(runners, float(request["timeout"]), requests.fd)
    return check(state, {"task_ids": gone})


def serve(state: str, bundle: str) -> None:
    """Answer requests, one JSON line each, until the input ends (the server let go of this
    session) or none comes for SESSION_IDLE_SECONDS; each request is bounded by its alarm.
    An empty line asks nothing: it only wakes a watch under way."""
    # The runners this agent starts are its children until it exits: collect each at its exit.
    signal.signal(signal.SIGCHLD, _collect_children)
    # The server sends nothing more before this answer: Python's stdin buffer is empty.
    requests = _Requests(sys.stdin.fileno())
    _reply({"ready": True})
    while True:
        signal.alarm(SESSION_IDLE_SECONDS)
        line = requests.readline()
        if not line:
            return
        if not line.strip():
            continue
        request = json.loads(line)
        signal.alarm(max(1, int(request.get("deadline", 30))) + ALARM_MARGIN_SECONDS)
        if request.get("op") == "watch":
            _reply(_safe(functools.partial(watch, state, request, requests)))
        else:
            _reply(_safe_answer(state, bundle, request))


def main(bundle: str, state: str) -> None:
    """Answer one request (a JSON line on stdin) with one JSON line on stdout, or serve many."""
    if len(sys.argv) > 2 and sys.argv[1] == "task":
        code = run_task(sys.argv[2], sys.argv[3])
        # Its exit is what waits and watches wake on: skip the interpreter's teardown (tens of ms).
        sys.stdout.flush()
        os._exit(code)
    _private_directory(state)
    request = json.loads(sys.stdin.buffer.readline())
    if request.get("op") == "serve":
        serve(state, bundle)
        return
    signal.alarm(max(1, int(request.get("deadline", 30))) + ALARM_MARGIN_SECONDS)  # bounded, whatever the link does
    _reply(_safe_answer(state, bundle, request))
