"""Server settings, read once from the environment.

Every timeout, grace period and budget lives here as a named setting so that
nothing in the code depends on a bare number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

HOME_ENV = "MCP_BACKGROUNDR_HOME"
OUTPUT_BUDGET_ENV = "MCP_BACKGROUNDR_OUTPUT_BUDGET"
TASK_ID_ENV = "MCP_BACKGROUNDR_TASK_ID"

DEFAULT_OUTPUT_BUDGET = 16 * 1024
MIN_OUTPUT_BUDGET = 256
MAX_OUTPUT_BUDGET = 1024 * 1024


def default_home() -> Path:
    """The state directory: ``$MCP_BACKGROUNDR_HOME`` or platformdirs' user state dir."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_state_dir("mcp-backgroundr", appauthor=False))


def _budget_from_env() -> int:
    raw = os.environ.get(OUTPUT_BUDGET_ENV)
    if not raw:
        return DEFAULT_OUTPUT_BUDGET
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{OUTPUT_BUDGET_ENV}={raw!r} is not an integer number of bytes") from None
    return min(max(value, MIN_OUTPUT_BUDGET), MAX_OUTPUT_BUDGET)


@dataclass(frozen=True)
class Settings:
    """Tunable limits of one server process."""

    home: Path = field(default_factory=default_home)
    output_budget: int = field(default_factory=_budget_from_env)
    """Most bytes of output text in one answer."""
    default_grace_seconds: float = 5.0
    """How long end_background_task waits after SIGTERM before SIGKILL."""
    max_grace_seconds: float = 300.0
    kill_wait_seconds: float = 2.0
    """How long to wait for SIGKILLed processes to disappear before naming survivors."""
    shutdown_grace_seconds: float = 0.8
    """Grace after SIGTERM at server shutdown; clients SIGKILL us 4 s after closing stdin."""
    shutdown_kill_wait_seconds: float = 0.6
    default_wait_seconds: float = 30.0
    max_wait_seconds: float = 600.0
    """Longest wait_for_task may block; clients often time a request out sooner."""
    default_max_restarts: int = 10
    default_lines: int = 50
    max_lines: int = 100_000

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.sqlite3"
