"""Data shared by every layer: task states, registry records, and the answers of the tools.

The pydantic models here are the tools' structured output; their field
descriptions are what a language model reads, so they are part of the public
contract (``tests/test_tool_schemas.py`` pins them).
"""

from __future__ import annotations

import enum
import functools
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from .errors import printable, shortened

TASK_ID_PREFIX = "t"
"""Every task id starts with it: a letter that begins no JSON or Python number (not e, i, n),
so clients that read argument values as JSON (the Inspector's ``--tool-arg task_id=...``)
never turn an id like ``123456e7`` into a number."""


SHOWN_COMMAND_LENGTH = 200
"""The most of a task's command any answer shows: a 100 KB command must not make every start,
status, wait and list answer 100 KB. The whole command is the ``task://ID/command`` resource."""


def one_line(text: str, length: int | None = None) -> str:
    """``text`` for one line of an answer or a row of a table: line breaks and every other control
    character shown as escapes (``printable``: a multi-line ``python -c`` script would otherwise
    break the line, an ESC reach the terminal), then cut to ``length``."""
    single = printable(text)
    return single if length is None else shortened(single, length)


def command_uri(task_id: str) -> str:
    """The resource that holds a task's whole command."""
    return f"task://{task_id}/command"


def shown_command(command: str, task_id: str) -> str:
    """A task's command as answers show it: whole up to SHOWN_COMMAND_LENGTH characters, else its
    start and a note that says how long it is and where the whole of it is."""
    if len(command) <= SHOWN_COMMAND_LENGTH:
        return command
    note = f" [cut: {len(command)} characters in all; read the resource {command_uri(task_id)} for the whole command]"
    return shortened(command, SHOWN_COMMAND_LENGTH) + note


ISO_TIMES_KEPT = 4096
"""Timestamps whose ISO text is kept: a listing shows every task's start time on every call."""


def iso_time(timestamp: float | None) -> str | None:
    """``timestamp`` as answers show times: ISO 8601 UTC, to the millisecond."""
    if timestamp is None:
        return None
    return _iso_text(timestamp)


@functools.lru_cache(maxsize=ISO_TIMES_KEPT)
def _iso_text(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def end_seen_path(log_path: str) -> str:
    """Where the log-capping process a dead server left writes when it saw the main process of the
    task whose log is ``log_path`` end (no server could: see ``logs/capping.py``)."""
    return log_path.removesuffix(".log") + ".end-seen"


def new_task_id() -> str:
    """A fresh random task id: the prefix and 8 hex digits."""
    return TASK_ID_PREFIX + secrets.token_hex(4)


class TaskState(enum.StrEnum):
    """Lifecycle of a task."""

    RUNNING = "running"
    COMPLETED = "completed"
    """The main process exited with status 0."""
    FAILED = "failed"
    """Non-zero exit, a signal we did not send, or the command could not start."""
    KILLED = "killed"
    """Ended by end_background_task or by the server's shutdown."""


@dataclass
class TaskRecord:
    """One row of the registry: everything needed to find, describe and re-adopt a task."""

    task_id: str
    name: str | None
    command: str
    cwd: str
    log_path: str
    owner: str
    started_at: float
    state: TaskState = TaskState.RUNNING
    pid: int | None = None
    pid_create_time: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    kill_requested: bool = False
    ended_at: float | None = None
    end_reason: str | None = None
    keep_running: bool = False
    """Survives its server's exit and is re-adopted by the next server."""
    restart: str = "no"
    """no, on-failure or always."""
    max_restarts: int = 0
    max_log_bytes: int = 0
    """Disk the log may take; past it the oldest output is dropped (0: no cap)."""
    max_runtime_seconds: float | None = None
    """Seconds after its start at which the task is ended (None: no limit)."""
    containment: str = "marker"
    """How its processes are found: cgroup, subreaper or marker (the level it started under)."""
    cgroup: str | None = None
    """Its cgroup directories, one per line (the v2 one first), at the cgroup level."""
    max_memory_bytes: int | None = None
    max_processes: int | None = None
    host: str | None = None
    """The SSH destination it runs on; None: this machine."""
    host_seen_at: float | None = None
    """When its host last answered about it."""
    host_output_bytes: int | None = None
    """The size of its output when its host last told it (answered with some of its output)."""
    host_dropped_bytes: int = 0
    """The output its host's size cap had dropped by then."""
    stdin: str | None = None
    """How it takes input: "pipe" (stdin=true), "terminal" (pty=true) or "none"; None in the
    records of versions that did not say."""
    leftovers_ended: bool = False
    """Whether, once its main process ended, the processes it may have left running were looked for
    and ended (or none was found), as far as its containment level finds them: an end asked for, its
    server's exit, its max_runtime_seconds, the next server after a crash. The next server looks for
    those of a finished task of a dead server only while this is False."""

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING

    @property
    def supervised(self) -> bool:
        """Whether the task runs under the runner (it outlives the server or restarts)."""
        return self.keep_running or self.restart != "no"

    @property
    def run_record_path(self) -> str:
        """Where the runner records how the task's runs went (its run record; the file keeps its
        old ``.status`` suffix, which tasks and remote hosts of earlier versions use)."""
        return self.log_path.removesuffix(".log") + ".status"

    @property
    def input_path(self) -> str:
        """The FIFO a keep_running task with stdin reads its input from (the runner holds it open)."""
        return self.log_path.removesuffix(".log") + ".input"

    @property
    def end_seen_path(self) -> str:
        """Where the capping process of its dead server wrote when it saw its end (see :func:`end_seen_path`)."""
        return end_seen_path(self.log_path)

    def runtime_seconds(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return round(max(0.0, end - self.started_at), 3)

    def request_end(self, reason: str) -> bool:
        """Note that ending this running task was asked for, and why (the first reason stays);
        whether that is news to write down."""
        if not self.running or self.kill_requested:
            return False
        self.kill_requested = True
        self.say_why_it_ended(reason)
        return True

    def say_why_it_ended(self, reason: str) -> None:
        """``reason`` first in ``end_reason``, before the notes gathered while it ran (a log no
        longer capped, output lost to a full disk), which stay."""
        self.end_reason = reason if not self.end_reason else f"{reason}; {self.end_reason}"

    def withdraw_end_request(self) -> None:
        """The end asked for never reached the run (it had ended by itself): the reason :meth:`request_end`
        put first goes, the notes gathered while it ran stay."""
        if self.kill_requested and self.end_reason is not None:
            self.end_reason = self.end_reason.partition("; ")[2] or None

    def mark_ended(self, state: TaskState, reason: str | None, at: float | None = None) -> None:
        """Record that the task ended, how (``state``), why (``reason``, before the notes it has;
        None: what its end_reason says already), and when (``at``; default now)."""
        self.state = state
        if reason is not None:
            self.say_why_it_ended(reason)
        self.ended_at = time.time() if at is None else at


class WaitReason(enum.StrEnum):
    """Why a wait returned."""

    EXITED = "exited"
    PATTERN = "pattern"
    PORT = "port"
    TIMEOUT = "timeout"


CONTAINMENT_DESCRIPTION = (
    "How its processes are found and ended: cgroup (exactly its cgroup's members; none can leave), "
    "subreaper (its session, marker and descendants; orphans come back to this server) or marker (its session "
    "and the MCP_BACKGROUNDR_TASK_ID variable; a process that drops both is not seen)."
)


COMMAND_DESCRIPTION = (
    f"The command as given, run by /bin/sh -c; past {SHOWN_COMMAND_LENGTH} characters cut, saying so, "
    "and the resource task://ID/command has the whole of it."
)

# The fields several answers share, described once.
_TaskId = Annotated[str, Field(description="The task's id.")]
_Name = Annotated[str | None, Field(description="The label given at start, if any.")]
_Command = Annotated[str, Field(description=COMMAND_DESCRIPTION)]
_StartedAt = Annotated[str, Field(description="Start time, ISO 8601 UTC.")]
_Runtime = Annotated[
    float,
    Field(
        description="Seconds from start to end, or to now while running. For an end no server saw (its server "
        "had died; end_reason says so): to when it was seen to end, or else to the last moment it was known to run, "
        "the least it ran."
    ),
]
_Containment = Annotated[str, Field(description=CONTAINMENT_DESCRIPTION)]
_Host = Annotated[str | None, Field(description="The SSH host it runs on; null: the server's machine.")]
_HostSeenAt = Annotated[str | None, Field(description="When its host last answered (ISO 8601 UTC).")]


class StartedTask(BaseModel):
    """Answer of run_background_task."""

    task_id: str = Field(description="Id to pass to the other tools.")
    pid: int | None = Field(
        description="Process id of its main process, the leader of its own session: the program itself when the "
        "command is one simple command (exec'd in place of the shell), else its shell."
    )
    state: TaskState = Field(description="running, completed, failed or killed.")
    command: _Command
    cwd: str = Field(description="Absolute working directory of the task.")
    log_path: str = Field(description="File that receives the task's stdout and stderr, interleaved.")
    containment: _Containment = "marker"
    host: str | None = Field(default=None, description="The SSH host it runs on (log_path is there); null: here.")
    wait: WaitResult | None = Field(
        default=None, description="When a readiness condition was given: how the wait for it ended, and the status."
    )


def socket_address(address: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class ListeningPort(BaseModel):
    """A TCP socket a task's process listens on."""

    address: str = Field(description="Local address, e.g. 127.0.0.1, 0.0.0.0 or ::.")
    port: int = Field(description="TCP port number.")
    pid: int = Field(description="Process that holds the socket.")


class TaskStatus(BaseModel):
    """Answer of get_task_status: lifecycle plus a bounded slice of output."""

    task_id: _TaskId
    name: _Name
    command: _Command
    cwd: str = Field(description="Absolute working directory.")
    state: TaskState = Field(description="running, completed (exit 0), failed (non-zero exit or signal) or killed.")
    exit_code: int | None = Field(
        description="Exit status of the main process; 128+N when signal N ended it; null while running."
    )
    signal: str | None = Field(description="Name of the signal that ended the main process, e.g. SIGTERM.")
    kill_requested: bool = Field(description="True once end_background_task or server shutdown asked it to stop.")
    pid: int | None = Field(description="Process id of the task's main process.")
    started_at: _StartedAt
    ended_at: str | None = Field(
        description="End time of the main process, ISO 8601 UTC; null while running. For an end no server saw (its "
        "server had died): when it was seen to end, or else the last moment it was known to run; end_reason says "
        "which, and by when it had ended."
    )
    runtime_seconds: _Runtime
    output: str = Field(
        description="Output text: the last `lines` lines, or the bytes from `since` forward, within the budget."
    )
    cursor: int = Field(description="Byte offset just after `output`; pass it as `since` to read only what follows.")
    output_bytes: int = Field(description="Size of all output written so far, in bytes.")
    truncated: bool = Field(description="True when some of the requested output was left out to fit the budget.")
    truncation: str | None = Field(description="What was left out and how to read it, when truncated.")
    lingering_pids: list[int] = Field(
        description="Processes the task started that outlive its main process; end_background_task ends them."
    )
    grep_matches: int | None = Field(
        default=None, description="With `grep`: how many lines matched in the searched range, shown or not."
    )
    listening: list[ListeningPort] = Field(
        default_factory=list, description="TCP ports the task's processes listen on (e.g. a dev server's)."
    )
    cpu_percent: float | None = Field(
        default=None,
        description="CPU use of all the task's processes since the previous status call (100 = one core).",
    )
    memory_rss_bytes: int | None = Field(
        default=None,
        description="Memory of all the task's processes: resident memory, or with a cgroup its own accounting.",
    )
    process_count: int | None = Field(
        default=0, description="How many processes the task has alive now; null when its host cannot be reached."
    )
    restarts: int = Field(default=0, description="How many times its restart policy restarted it.")
    dropped_bytes: int = Field(
        default=0, description="Oldest output dropped to keep the log under its size cap (max_log_bytes)."
    )
    next_start_at: str | None = Field(
        default=None, description="When a restart is due (ISO 8601 UTC), while it waits out its backoff."
    )
    end_reason: str | None = Field(
        default=None,
        description="Why it was ended or how its end was learnt, e.g. end_background_task, server shutdown, "
        "max_runtime_seconds (N s) reached.",
    )
    max_runtime_seconds: float | None = Field(
        default=None, description="Seconds after its start at which it is ended; null: no limit."
    )
    containment: _Containment = "marker"
    max_memory_bytes: int | None = Field(
        default=None, description="Memory its processes may use together (its cgroup's limit); null: no limit."
    )
    max_processes: int | None = Field(
        default=None, description="Processes it may have at once (its cgroup's limit); null: no limit."
    )
    host: _Host = None
    host_reachable: bool | None = Field(
        default=None,
        description="For a remote task: whether its host answered just now. When false, the rest is what was "
        "last known, and host_problem says why.",
    )
    host_seen_at: _HostSeenAt = None
    host_problem: str | None = Field(default=None, description="Why its host could not be reached, when it could not.")


class Survivor(BaseModel):
    """A process of a task that could not be ended."""

    pid: int = Field(description="Process id still alive.")
    command: str = Field(description="Its command line, as far as it could be read (at most 200 characters).")
    reason: str = Field(description="Why it survived, as far as can be told.")

    @field_validator("command")
    @classmethod
    def _shown(cls, command: str) -> str:
        return one_line(command, SHOWN_COMMAND_LENGTH)


class EndedTask(BaseModel):
    """Answer of end_background_task: once the task's processes are gone, or (see `advice`) while
    they are still being ended."""

    task_id: _TaskId
    state: TaskState = Field(
        description="Final state: killed, or completed/failed if it had already finished. While `advice` says "
        "it is still ending: its state then, running, or killed once its main process died while the processes "
        "it started are still being ended."
    )
    exit_code: int | None = Field(description="Exit status of the main process; 128+N when signal N ended it.")
    signal: str | None = Field(description="Name of the signal that ended the main process, if one did.")
    signalled_pids: list[int] = Field(
        description="Every process of the task that was sent a signal (empty while `advice` says it is still "
        "ending: not known yet)."
    )
    escalated: bool = Field(
        description="True when SIGKILL was needed: sent to a process still alive that SIGTERM had not ended "
        "(nor doomed) within the grace period (false while `advice` says it is still ending: not known yet)."
    )
    survivors: list[Survivor] = Field(
        description="Processes still alive after SIGKILL; empty on success, and while `advice` says the task is "
        "still ending (not known yet: get_task_status tells)."
    )
    containment: _Containment = "marker"
    verified: str = Field(
        default="",
        description="What was checked at the end, true for the containment level (e.g. the task's cgroup is empty).",
    )
    advice: str | None = Field(
        default=None,
        description="Set when the answer came before the end was done (no progress token, and the end outlasted "
        "the bound on such requests): it goes on; how to learn its outcome.",
    )


class InputSent(BaseModel):
    """Answer of send_task_input."""

    task_id: str = Field(description="The task written to.")
    bytes_written: int = Field(description="Bytes written to its stdin or terminal.")
    closed: bool = Field(description="True when its input was closed afterwards (end of input).")
    cursor: int = Field(
        description="Output offset just before the input was written: pass it as `since` to wait_for_task "
        "(output_pattern) or get_task_status to read the reply."
    )


class RemovedTask(BaseModel):
    """Answer of remove_task."""

    task_id: str = Field(description="The task that was forgotten.")
    freed_bytes: int = Field(
        description="Disk space freed: the blocks the task's deleted files took (a capped log's dropped "
        "output took none, so this is far below the bytes the task wrote)."
    )


class TaskSummary(BaseModel):
    """One line of list_tasks. A line leaves out what its task does not have (a null, no address):
    a listing grows with the tasks, and every value a client checks costs it time."""

    task_id: _TaskId
    name: _Name = None
    command: _Command
    state: TaskState = Field(description="running, completed, failed or killed.")
    pid: int | None = Field(default=None, description="Process id of the main process; absent when none is known.")
    exit_code: int | None = Field(default=None, description="Exit status; absent while running.")
    started_at: _StartedAt
    runtime_seconds: _Runtime
    listening: list[str] = Field(
        default_factory=list, description="TCP addresses its processes listen on, e.g. 127.0.0.1:8000."
    )
    owner: str = Field(description="The server that owns it: host:pid:start-time.")
    containment: _Containment = "marker"
    host: _Host = None
    host_reachable: bool | None = Field(
        default=None,
        description="For a remote task whose host this listing asked (a running task of a server that is gone): "
        "whether it answered. When false, the row is what was last known. Absent: not asked (this server's "
        "tasks are kept current by a watch on their host).",
    )
    host_seen_at: _HostSeenAt = None
    lingering: int | None = Field(
        default=None,
        description="For a finished task on this machine: how many processes it started still run (its main "
        "process ended: a `server &`); state=running lists it. end_background_task ends them. Absent: none.",
    )


class TaskList(BaseModel):
    """Answer of list_tasks."""

    tasks: list[TaskSummary] = Field(description="Tasks, newest first, at most `limit` of them.")
    total: int = Field(default=0, description="How many tasks matched; more than listed when `limit` cut the list.")


class WaitResult(BaseModel):
    """Answer of wait_for_task."""

    reason: WaitReason = Field(
        description="exited (the main process ended; with a port, every process it started too), pattern (a line "
        "matched), port (a process of the task listens on it) or timeout (`advice` says who holds a waited-for port)."
    )
    waited_seconds: float = Field(description="How long the wait lasted.")
    matched_line: str | None = Field(description="The line that matched output_pattern, when reason is pattern.")
    matched_cursor: int | None = Field(
        description="Byte offset just after the matched line; pass it as `since` to read what followed."
    )
    status: TaskStatus = Field(description="The task's status; its output is what was written since the wait began.")
    advice: str | None = Field(
        default=None,
        description="How to go on: set when the wait stopped early to answer before the client's request "
        "timeout (the request had no progress token), or when the task ended having written nothing during "
        "the wait (where its earlier output is).",
    )


StartedTask.model_rebuild()
