"""Server settings, read once from the environment.

Every timeout, grace period and budget lives here as a named setting so that
nothing in the code depends on a bare number.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .errors import InvalidArgumentError, plain_number

HOME_ENV = "MCP_BACKGROUNDR_HOME"
DEFAULT_TASK_NICENESS = 5
OUTPUT_BUDGET_ENV = "MCP_BACKGROUNDR_OUTPUT_BUDGET"
TASK_ID_ENV = "MCP_BACKGROUNDR_TASK_ID"
TOKEN_ENV = "MCP_BACKGROUNDR_TOKEN"
"""The HTTP bearer token, when the user sets it; no task inherits it."""
KEEP_FINISHED_ENV = "MCP_BACKGROUNDR_KEEP_FINISHED"
KEEP_DAYS_ENV = "MCP_BACKGROUNDR_KEEP_DAYS"
MAX_LOG_BYTES_ENV = "MCP_BACKGROUNDR_MAX_LOG_BYTES"
CONTAINMENT_ENV = "MCP_BACKGROUNDR_CONTAINMENT"
"""auto (default), cgroup, subreaper or marker: the strongest containment level to use."""
PLATFORM_ENV = "MCP_BACKGROUNDR_PLATFORM"
"""auto (default), linux or portable: the platform backend (see platform/backend.py)."""
CGROUP_ENV = "MCP_BACKGROUNDR_CGROUP"
TASK_NICENESS_ENV = "MCP_BACKGROUNDR_TASK_NICENESS"
"""A delegated cgroup v2 directory to make task cgroups in (without root)."""
SETTINGS_PREFIX = "MCP_BACKGROUNDR_"
"""Variables of the server's own settings: tasks do not inherit them unless asked."""
UNATTENDED_WAIT_ENV = "MCP_BACKGROUNDR_UNATTENDED_WAIT_SECONDS"
DEFAULT_UNATTENDED_WAIT_SECONDS = 45.0
"""Below the 60 s a TypeScript SDK client waits for an answer by default, with room to spare."""
MIN_LOG_CAP = 64 * 1024
MAX_LOG_CAP = 1 << 40

MAX_GRACE_SECONDS = 300.0
MAX_LINES = 100_000
"""The most lines one read may ask for."""
MAX_KEEP_FINISHED = 1_000_000
MAX_KEEP_DAYS = 36_500.0

DEFAULT_OUTPUT_BUDGET = 16 * 1024
MIN_OUTPUT_BUDGET = 256
MAX_OUTPUT_BUDGET = 1024 * 1024


def default_home() -> Path:
    """The state directory: ``$MCP_BACKGROUNDR_HOME`` or platformdirs' user state dir."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_state_dir("mcp-backgroundr", appauthor=False))


def _number_from_env(name: str, default: float, low: float, high: float, whole: bool = False) -> float:
    """The setting ``name``, a number (``whole``: a whole one, ``1e6`` as well as ``1000000``) from
    ``low`` to ``high``: any other value stops the program with one line (a value clamped in
    silence did what nobody asked: KEEP_DAYS=-1 pruned all; KEEP_FINISHED=1.5 kept 1)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high or (whole and not value.is_integer()):  # NaN too
        kind = "a whole number" if whole else "a number"
        advice = f"give {kind} from {plain_number(low)} to {plain_number(high)}, or unset it"
        raise InvalidArgumentError(name, raw, advice)
    return value


def _whole_number_from_env(name: str, default: int, low: int, high: int) -> int:
    return int(_number_from_env(name, default, low, high, whole=True))


def _budget_from_env() -> int:
    return _whole_number_from_env(OUTPUT_BUDGET_ENV, DEFAULT_OUTPUT_BUDGET, MIN_OUTPUT_BUDGET, MAX_OUTPUT_BUDGET)


def _keep_finished_from_env() -> int:
    return _whole_number_from_env(KEEP_FINISHED_ENV, 200, 0, MAX_KEEP_FINISHED)


def _max_log_bytes_from_env() -> int:
    return _whole_number_from_env(MAX_LOG_BYTES_ENV, 64 * 1024 * 1024, MIN_LOG_CAP, MAX_LOG_CAP)


def _keep_days_from_env() -> float:
    return _number_from_env(KEEP_DAYS_ENV, 7.0, 0.0, MAX_KEEP_DAYS)


def _task_niceness_from_env() -> int:
    return _whole_number_from_env(TASK_NICENESS_ENV, DEFAULT_TASK_NICENESS, 0, 19)


def _unattended_wait_from_env() -> float:
    return _number_from_env(UNATTENDED_WAIT_ENV, DEFAULT_UNATTENDED_WAIT_SECONDS, 0.1, 600.0)


@dataclass(frozen=True)
class Settings:
    """Tunable limits of one server process."""

    home: Path = field(default_factory=default_home)
    output_budget: int = field(default_factory=_budget_from_env)
    """Most bytes of output text in one answer."""
    default_grace_seconds: float = 5.0
    """How long end_background_task waits after SIGTERM before SIGKILL."""
    max_grace_seconds: float = MAX_GRACE_SECONDS
    kill_wait_seconds: float = 2.0
    """How long to wait for SIGKILLed processes to disappear before naming survivors."""
    shutdown_grace_seconds: float = 0.8
    """Grace after SIGTERM at server shutdown; clients SIGKILL us 4 s after closing stdin."""
    shutdown_kill_wait_seconds: float = 0.6
    default_wait_seconds: float = 30.0
    max_wait_seconds: float = 600.0
    """Longest wait_for_task may block, when the client keeps the request alive with progress."""
    unattended_wait_seconds: float = field(default_factory=_unattended_wait_from_env)
    """Longest a wait blocks when the request carries no progress token: clients time such a
    request out (60 s in the TypeScript SDK), so the wait answers before and says to call again."""
    max_log_bytes: int = field(default_factory=_max_log_bytes_from_env)
    """Disk one task's log may take by default; past it the oldest output is dropped."""
    keep_finished: int = field(default_factory=_keep_finished_from_env)
    """Finished tasks kept (newest first); older ones are pruned with their logs."""
    keep_days: float = field(default_factory=_keep_days_from_env)
    """Finished tasks older than this are pruned with their logs."""
    default_max_restarts: int = 10
    remote_call_seconds: float = 10.0
    """Longest a call to a remote host may take (beyond the wait or grace it asks for)."""
    default_lines: int = 50
    max_lines: int = MAX_LINES
    containment: str = field(default_factory=lambda: os.environ.get(CONTAINMENT_ENV) or "auto")
    """The strongest containment level to use: auto, cgroup, subreaper or marker."""
    cgroup_dir: str | None = field(default_factory=lambda: os.environ.get(CGROUP_ENV) or None)
    """A delegated cgroup v2 directory for task cgroups."""
    task_niceness: int = field(default_factory=_task_niceness_from_env)
    """The nice value of each task's session (its autogroup, on Linux), 0 to 19: how far below
    the server tasks run when they compete for the CPU (see platform/process.py)."""

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.sqlite3"

    @property
    def helpers_log(self) -> Path:
        """Where the server's helper processes (capping, matching) write what they say (logs/helpers_log.py)."""
        return self.home / "helpers.log"
