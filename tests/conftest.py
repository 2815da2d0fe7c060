"""Shared fixtures: a private state directory per test, and a check that no process outlives its test."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mcp_backgroundr.config import HOME_ENV, TASK_ID_ENV, Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _tasks_of(home: Path) -> tuple[set[str], list[Path]]:
    """Ids and cgroup directories of the tasks recorded under ``home`` (ids from their logs too:
    a test may have deleted the registry)."""
    log_ids = {path.name.partition(".")[0] for path in (home / "logs").glob("*.log")}
    registry_path = home / "registry.sqlite3"
    if not registry_path.exists():
        return log_ids, []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{registry_path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT task_id, cgroup FROM tasks").fetchall()
    except sqlite3.OperationalError:  # a server killed before it made its table: no task recorded
        return log_ids, []
    directories = [Path(path) for _, cgroup in rows if cgroup for path in cgroup.split("\n")]
    return log_ids | {task_id for task_id, _ in rows}, directories


def _processes_using(home: Path, token: str, task_ids: set[str]) -> list[psutil.Process]:
    """Live processes of a test: the servers and commands run with its state directory, the tasks
    recorded there (by their marker: tasks run with env_passthrough have no state directory
    variable), any process whose command line names the test's directory (how tests tag
    processes that drop the marker and leave the task's session), and every descendant of these."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["environ", "cmdline"], ad_value=None):
        environ = process.info.get("environ") or {}
        tagged = token in " ".join(process.info.get("cmdline") or ())
        ours = environ.get(HOME_ENV) == str(home) or environ.get(TASK_ID_ENV) in task_ids or tagged
        if process.pid != os.getpid() and ours:
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                found |= {child.pid: child for child in process.children(recursive=True)}
    return [process for process in found.values() if _is_alive(process)]


ENDING_SECONDS = 2.0
"""How long a process found at the end of a test gets to end on its own before it counts as left
behind: the capping process of a server a test killed outlives it while the server's tasks run
(logs/capping.py) and ends moments after them; one caught ending has an empty command line."""


def _not_ending(found: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``found`` still alive after ENDING_SECONDS (at once when none ends meanwhile)."""
    if not found:
        return found
    _, alive = psutil.wait_procs(found, timeout=ENDING_SECONDS)
    return [process for process in alive if _is_alive(process)]


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200]
    except psutil.Error:
        return ""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh state directory; every process started under it must be gone when the test ends,
    and every cgroup made for its tasks removed."""
    state = tmp_path / "state"
    monkeypatch.setenv(HOME_ENV, str(state))
    yield state
    task_ids, cgroups = _tasks_of(state)
    leftovers = _not_ending(_processes_using(state, str(tmp_path), task_ids))
    known = {process.pid for process in leftovers}
    for directory in cgroups:  # a process in a task's cgroup is the task's, whatever it did
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            for pid in map(int, (directory / "cgroup.procs").read_text().split()):
                if pid not in known:
                    leftovers.append(psutil.Process(pid))
    for process in leftovers:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(leftovers, timeout=5)
    left_cgroups = [directory for directory in cgroups if directory.exists()]
    for directory in left_cgroups:
        with contextlib.suppress(OSError):
            (directory / "cgroup.kill").write_text("1")
            directory.rmdir()
    assert not leftovers, "processes outlived the test: " + ", ".join(f"{p.pid} {_command_line(p)}" for p in leftovers)
    assert not left_cgroups, f"cgroups outlived the test: {left_cgroups}"


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


SMALL_DISK_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def _small_tmpfs(directory: Path) -> Iterator[Path]:
    """``directory`` on a tmpfs of SMALL_DISK_BYTES, a disk a test can fill; unmounted (lazily: a
    process may still hold a file there) after the test."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES},mode=0700", "tmpfs", str(directory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.fixture
def small_disk(home: Path) -> Iterator[Path]:
    """The state directory on a small tmpfs (``_small_tmpfs``)."""
    with _small_tmpfs(home) as directory:
        yield directory


@pytest.fixture
def small_spare_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory beside the state directory on a small tmpfs of its own (``_small_tmpfs``): filling
    it leaves the registry's disk free."""
    with _small_tmpfs(tmp_path / "spare") as directory:
        yield directory
