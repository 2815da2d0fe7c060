"""The requests the core takes, each checked in one place before anything is done.

A request holds the arguments as the caller gave them (the tools' names and values);
its ``check_*`` function turns it into what the core acts on, or raises one
:class:`~mcp_backgroundr.errors.InvalidArgumentError` (or a policy refusal) naming the
field, the value and what to do. What only the running task can tell — whether a cursor
lies within its log, whether there is room for one more task — is checked where it is
known, in ``reading`` and ``starting``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Settings
from ..errors import InvalidArgumentError, first_control, printable
from ..logs.patterns import Pattern, compiled
from ..platform.containment import Limits
from . import validation
from .place import Place
from .policy import Policy
from .validation import WaitConditions

KEEP_RUNNING_PTY_REASON = (
    "a pty task cannot outlive the server that holds its terminal (the server holds the terminal's "
    "other end and copies its output to the log: when it exits, the terminal hangs up)"
)
"""Why keep_running is refused with pty: said by the refusal, the parameter's description and the README."""
MAX_NAME_LENGTH = 200
MAX_CURSOR = 2**63 - 1
"""The largest byte offset a file can have (the kernel's off_t): a cursor past it is no cursor an
answer gave, and reading from it would overflow on the way to the kernel."""


@dataclass(frozen=True)
class StartRequest:
    """run_background_task's arguments."""

    command: str | list[str]
    cwd: str | None = None
    env: Mapping[str, str | None] | None = None
    name: str | None = None
    stdin: bool = False
    pty: bool = False
    keep_running: bool = False
    restart: str = "no"
    max_restarts: int | None = None
    max_log_bytes: int | None = None
    max_runtime_seconds: float | None = None
    max_memory_bytes: int | None = None
    max_processes: int | None = None
    host: str | None = None
    wait_for_pattern: str | None = None
    wait_for_port: int | None = None
    wait_timeout_seconds: float | None = None


@dataclass(frozen=True)
class StartPlan:
    """A checked start: what to run, where, with which limits, and what to wait for after."""

    command: str
    cwd: str
    """The resolved working directory here; on a host, as given ("" for its home)."""
    env: dict[str, str | None]
    """The variables the caller adds (None: unset)."""
    name: str | None
    stdin: bool
    pty: bool
    keep_running: bool
    restart: str
    max_restarts: int
    max_log_bytes: int
    max_runtime_seconds: float | None
    limits: Limits
    host: str | None
    wait: WaitConditions | None = field(default=None)
    """What to wait for once started (wait_for_pattern, wait_for_port), if anything."""


def bound_start(arguments: Mapping[str, object]) -> None:
    """Refuse run_background_task's arguments, as the client sent them, by the length of its argv
    list and env object alone: before anything reads them item by item (client habits, validation),
    which on the event loop cost every client as long as they are long."""
    command, env = arguments.get("command"), arguments.get("env")
    if isinstance(command, list):
        validation.checked_word_count(len(command))
    if isinstance(env, dict):
        validation.checked_variable_count(len(env))


def check_start(request: StartRequest, settings: Settings, policy: Policy, place: Place) -> StartPlan:
    """The whole of a start request, checked (the policy included) before anything is started;
    ``place``: where it would run, which checks what it cannot run and where its cwd is."""
    wait = _start_wait(request, settings)
    command = validation.checked_command(validation.shell_command(request.command))
    policy.check_command(command)
    cwd = place.checked_start(request, policy)
    runtime_limit = policy.runtime_limit(request.max_runtime_seconds)
    limits = Limits(
        policy.task_limit("max_memory_bytes", request.max_memory_bytes),
        policy.task_limit("max_processes", request.max_processes),
    )
    env = validation.checked_env(request.env)
    checked_name(request.name)
    restarts = validation.checked_restart(request.restart, request.max_restarts, settings.default_max_restarts)
    log_cap = validation.checked_log_cap(request.max_log_bytes, settings.max_log_bytes)
    if request.keep_running and request.pty:
        raise InvalidArgumentError(
            "keep_running",
            True,
            KEEP_RUNNING_PTY_REASON + "; drop pty (stdin=true gives it input that outlives the server)",
        )
    return StartPlan(
        command=command,
        cwd=cwd,
        env=env,
        name=request.name,
        stdin=request.stdin,
        pty=request.pty,
        keep_running=request.keep_running,
        restart=request.restart,
        max_restarts=restarts,
        max_log_bytes=log_cap,
        max_runtime_seconds=runtime_limit,
        limits=limits,
        host=request.host,
        wait=wait,
    )


def checked_name(name: str | None) -> None:
    """A task's name is a label to tell it by, shown on one line of every listing: a control
    character (a line break, ESC, a bidirectional override) has no place in one, and shown
    escaped it would not be the name given, so it is refused rather than stored."""
    if name is None:
        return
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError("name", name, f"use a label of at most {MAX_NAME_LENGTH} characters")
    if (control := first_control(name)) is not None:
        advice = f"a name is a one-line label; remove the control character {printable(control)}"
        raise InvalidArgumentError("name", name, advice)


def _start_wait(request: StartRequest, settings: Settings) -> WaitConditions | None:
    """What run_background_task waits for once the task has started."""
    if request.wait_for_pattern is None and request.wait_for_port is None:
        if request.wait_timeout_seconds is not None:
            raise InvalidArgumentError(
                "wait_timeout_seconds",
                request.wait_timeout_seconds,
                "it needs wait_for_pattern or wait_for_port; give one, or drop the timeout",
            )
        return None
    timeout = settings.default_wait_seconds if request.wait_timeout_seconds is None else request.wait_timeout_seconds
    return WaitConditions(
        validation.checked_timeout("wait_timeout_seconds", timeout, settings.max_wait_seconds),
        compiled("wait_for_pattern", request.wait_for_pattern),
        validation.checked_port("wait_for_port", request.wait_for_port),
        "wait_for_pattern",
    )


@dataclass(frozen=True)
class WaitRequest:
    """wait_for_task's arguments (besides the task)."""

    timeout_seconds: float | None = None
    output_pattern: str | None = None
    port: int | None = None


def check_wait(request: WaitRequest, settings: Settings) -> WaitConditions:
    """What a wait waits for, checked."""
    timeout = settings.default_wait_seconds if request.timeout_seconds is None else request.timeout_seconds
    return WaitConditions(
        validation.checked_timeout("timeout_seconds", timeout, settings.max_wait_seconds),
        compiled("output_pattern", request.output_pattern),
        validation.checked_port("port", request.port),
    )


@dataclass(frozen=True)
class ReadRequest:
    """get_task_status's arguments (besides the task)."""

    lines: int | None = None
    since: int | None = None
    grep: str | None = None
    raw: bool = False


@dataclass(frozen=True)
class ReadPlan:
    """A checked read: the last ``lines`` lines, or what follows ``since``; or the lines matching ``grep``."""

    lines: int
    since: int | None
    grep: Pattern | None
    grep_text: str | None
    raw: bool
    grep_last: int | None = None
    """With ``grep``: how many of the last matching lines to show (``lines``, when the client gave it)."""


def check_read(request: ReadRequest, settings: Settings) -> ReadPlan:
    """What to read of a task's output, checked (whether ``since`` lies within the log is the
    read's to tell: the log grows)."""
    lines = settings.default_lines if request.lines is None else request.lines
    if not 0 <= lines <= settings.max_lines:
        advice = f"ask for 0 to {settings.max_lines} lines, or read forward with since"
        raise InvalidArgumentError("lines", lines, advice)
    if request.since is not None and not 0 <= request.since <= MAX_CURSOR:
        raise InvalidArgumentError("since", request.since, "pass a cursor (a byte offset >= 0) from an earlier answer")
    return ReadPlan(lines, request.since, compiled("grep", request.grep), request.grep, request.raw, request.lines)


def check_grace(grace_seconds: float | None, settings: Settings) -> float:
    """end_background_task's grace period: from SIGTERM to SIGKILL."""
    grace = settings.default_grace_seconds if grace_seconds is None else grace_seconds
    if not 0 <= grace <= settings.max_grace_seconds:
        raise InvalidArgumentError("grace_seconds", grace_seconds, f"use 0 to {settings.max_grace_seconds:g} seconds")
    return grace
