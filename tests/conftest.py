"""Shared fixtures: a private state directory per test, and a check that no process outlives its test."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mcp_backgroundr.config import HOME_ENV, Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _processes_using(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["environ"], ad_value=None):
        environ = process.info.get("environ") or {}
        if process.pid != os.getpid() and environ.get(HOME_ENV) == str(home):
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except psutil.Error:
                continue
    return found


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh state directory; every process started under it must be gone when the test ends."""
    state = tmp_path / "state"
    monkeypatch.setenv(HOME_ENV, str(state))
    yield state
    leftovers = _processes_using(state)
    for process in leftovers:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(leftovers, timeout=5)
    assert not leftovers, "processes outlived the test: " + ", ".join(
        f"{p.pid} {p.info.get('name') or ''}" for p in leftovers
    )


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home)


@pytest.fixture(scope="session")
def server_command() -> str:
    """The installed console script, as an MCP client would launch it."""
    beside_python = Path(sys.executable).parent / "mcp-backgroundr"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("mcp-backgroundr")
    assert found, "mcp-backgroundr is not installed; run: pip install -e '.[test]'"
    return found
