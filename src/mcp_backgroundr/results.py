"""What task operations answer: plain data, one class per operation.

The core produces it (and ``remote/`` for a task on another host); the tools turn it into
their answer models (``models.py``, pydantic, the public contract with a description on every
field) and their text (``tools/answers.py``); the CLI prints it. The core never builds an
answer model, and nothing edits what the core returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .models import TaskState, WaitReason, one_line


@dataclass(frozen=True)
class Started:
    """A task just started (run_background_task)."""

    task_id: str
    pid: int | None
    state: TaskState
    command: str
    cwd: str
    log_path: str
    containment: str
    host: str | None


@dataclass(frozen=True)
class Listening:
    """A TCP socket a task's process listens on."""

    address: str
    port: int
    pid: int


@dataclass
class Status:
    """A task's lifecycle and a bounded slice of its output (get_task_status)."""

    task_id: str
    name: str | None
    command: str
    cwd: str
    state: TaskState
    exit_code: int | None
    signal: str | None
    kill_requested: bool
    pid: int | None
    started_at: str
    ended_at: str | None
    runtime_seconds: float
    output: str
    cursor: int
    output_bytes: int
    truncated: bool
    truncation: str | None
    lingering_pids: list[int]
    grep_matches: int | None = None
    listening: list[Listening] = field(default_factory=list)
    cpu_percent: float | None = None
    memory_rss_bytes: int | None = None
    process_count: int | None = 0
    restarts: int = 0
    dropped_bytes: int = 0
    next_start_at: str | None = None
    end_reason: str | None = None
    max_runtime_seconds: float | None = None
    containment: str = "marker"
    max_memory_bytes: int | None = None
    max_processes: int | None = None
    host: str | None = None
    host_reachable: bool | None = None
    host_seen_at: str | None = None
    host_problem: str | None = None


def output_away(status: Status) -> str:
    """Why a remote task's output cannot be read now (its host cannot be reached), in one line."""
    problem = status.host_problem or ""
    seen = "" if "last answered" in problem else f" (it last answered at {status.host_seen_at or 'never'})"
    return f"task {status.task_id}'s output is on its host, which cannot be reached{seen}: {problem}"


@dataclass(frozen=True)
class Waited:
    """How a wait ended (wait_for_task), with the task's status."""

    reason: WaitReason
    waited_seconds: float
    matched_line: str | None
    matched_cursor: int | None
    status: Status
    advice: str | None = None


@dataclass(frozen=True)
class Survivor:
    """A process of a task that could not be ended."""

    pid: int
    command: str
    reason: str


class _ShownSurvivor(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def command(self) -> str: ...
    @property
    def reason(self) -> str: ...


def survivors_text(survivors: Iterable[_ShownSurvivor]) -> str:
    """The processes an end could not end, as the tool's answer and the CLI's ``stop`` both say them
    (their command lines are the task's text: one line each)."""
    return "; ".join(f"pid {s.pid} ({one_line(s.command)}): {s.reason}" for s in survivors)


def signalled_text(signalled_pids: Sequence[int], escalated: bool) -> str:
    """What an end did, as the tool's answer and the CLI's ``stop`` both say it."""
    return f"signalled {len(signalled_pids)} process(es)" + (", SIGKILL was needed" if escalated else "")


@dataclass(frozen=True)
class Ended:
    """A task ended (end_background_task), once its processes are gone."""

    task_id: str
    state: TaskState
    exit_code: int | None
    signal: str | None
    signalled_pids: list[int]
    escalated: bool
    survivors: list[Survivor]
    containment: str = "marker"
    verified: str = ""
    advice: str | None = None
    """Set when the answer came before the end was done: how to learn its outcome."""


@dataclass(frozen=True)
class InputWritten:
    """Input written to a task (send_task_input)."""

    task_id: str
    bytes_written: int
    closed: bool
    cursor: int


@dataclass(frozen=True)
class Removed:
    """A finished task forgotten (remove_task)."""

    task_id: str
    freed_bytes: int


@dataclass
class Summary:
    """One task in a listing. Not frozen, though nothing edits it either: a listing makes one per
    task per call, and a frozen dataclass is made at twice the cost (docs/benchmarks.md 13)."""

    task_id: str
    name: str | None
    command: str
    state: TaskState
    pid: int | None
    exit_code: int | None
    started_at: str
    runtime_seconds: float
    listening: list[str]
    owner: str
    containment: str
    host: str | None
    host_reachable: bool | None = None
    host_seen_at: str | None = None
    lingering: int | None = None
    """How many processes a finished task left running (None: none, or it runs)."""


@dataclass(frozen=True)
class Listing:
    """Tasks, newest first (list_tasks)."""

    tasks: list[Summary]
    total: int
