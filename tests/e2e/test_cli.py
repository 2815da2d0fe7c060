"""End-to-end: the console script and ``python -m`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mcp_backgroundr.config import HOME_ENV


def test_an_unusable_state_directory_is_one_line_and_a_nonzero_exit(server_command: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [server_command], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        env=os.environ | {HOME_ENV: str(blocker)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert HOME_ENV in result.stderr


def test_python_dash_m_serves_and_exits_when_stdin_closes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_backgroundr"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == ""
    assert "client closed stdin; ended 0 task(s)" in result.stderr


def test_version_and_help() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "mcp_backgroundr", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert version.stdout.startswith("mcp-backgroundr ")
    usage = subprocess.run(
        [sys.executable, "-m", "mcp_backgroundr", "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "MCP" in usage.stdout
