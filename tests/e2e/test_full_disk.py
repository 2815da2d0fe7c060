"""End-to-end: a full disk locks no one out and loses nothing the server knew (issue 10, "never
lose the disk").

A task whose server was SIGKILLed writes on with no server to cap its log, and fills the disk
the registry is on. The commands that read (ps, status, logs) still work; a server starting
caps the grown logs before it writes anything, and so frees the space it needs; prune deletes
logs before it needs to write. Changes a running server could not record while the disk was
full are kept and written once there is space.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from ..disks import fill_disk, free_bytes
from .harness import alive, call, call_error, cli, connect, kill_server_of, until

pytestmark = pytest.mark.anyio

CAP = 1024 * 1024
NEARLY_FULL = 64 * 1024
WRITER = "while yes | head -c 1048576; do sleep 0.05; done"
"""About 20 MB/s, until a write fails (ENOSPC): it fills the small disk soon after its server is
killed, not before (a server caps it meanwhile)."""


async def _disk_filled_with_no_server(server_command: str, home: Path) -> dict[str, Any]:
    """A writer capped at CAP whose server was SIGKILLed with its capping process, once its log
    filled the disk."""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=WRITER, max_log_bytes=CAP, wait_for_pattern="y")
        await kill_server_of(task["pid"], capping_too=True)
    with anyio.fail_after(30):  # no server caps it
        while free_bytes(home) > NEARLY_FULL:
            await anyio.sleep(0.02)
    return task


async def test_a_full_disk_leaves_the_reading_commands_working_and_the_next_server_frees_it(
    server_command: str, small_disk: Path
) -> None:
    task = await _disk_filled_with_no_server(server_command, small_disk)
    for command in (["ps", "--all"], ["status", task["task_id"]], ["logs", "-n", "1", task["task_id"]]):
        result = cli(server_command, *command)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "y" in result.stdout
    async with connect(server_command) as client:  # it caps the log before it writes
        assert alive([task["pid"]]) == []
        assert free_bytes(small_disk) > 8 * CAP
        status = await call(client, "get_task_status", task_id=task["task_id"], lines=1)
        assert status["state"] in ("killed", "failed")
        started = await call(client, "run_background_task", command="echo works", wait_for_pattern="works")
        assert started["state"] in ("running", "completed")


async def test_prune_frees_a_full_disk(server_command: str, small_disk: Path) -> None:
    task = await _disk_filled_with_no_server(server_command, small_disk)
    with anyio.fail_after(10):  # ENOSPC ends the writer (and init reaps it: no server is its parent)
        while psutil.pid_exists(task["pid"]):
            await anyio.sleep(0.02)
    result = cli(server_command, "prune", "--keep", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned 1 finished task(s)")
    assert free_bytes(small_disk) > 8 * CAP
    assert not Path(task["log_path"]).exists()


def _recorded_exit(home: Path, task_id: str) -> object:
    with sqlite3.connect(f"file:{home / 'registry.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT exit_code FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0]


async def _ended_once_the_disk_is_full(
    client: Client, disk: Path, then: str
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """A task that runs ``then`` once ``disk`` is full: the task, its status at its exit, and the
    ballast that fills the disk (delete it to free the disk)."""
    task = await call(client, "run_background_task", command=f"head -n 1 >/dev/null; {then}", stdin=True)
    ballast = fill_disk(disk)
    await call(client, "send_task_input", task_id=task["task_id"], text="go")
    status = (await call(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=10))["status"]
    return task, status, ballast


async def test_an_exit_seen_while_the_disk_was_full_is_recorded_once_there_is_space(
    server_command: str, small_disk: Path
) -> None:
    async with connect(server_command) as client:
        task, status, ballast = await _ended_once_the_disk_is_full(client, small_disk, "exit 3")
        assert (status["state"], status["exit_code"]) == ("failed", 3)
        assert _recorded_exit(small_disk, task["task_id"]) is None  # not written: the disk is full
        ballast.unlink()

        async def recorded() -> bool:
            return _recorded_exit(small_disk, task["task_id"]) == 3

        await until(recorded)


async def test_a_full_disk_is_said_to_the_model_with_what_it_can_do_and_as_why_a_task_failed(
    server_command: str, small_disk: Path
) -> None:
    async with connect(server_command) as client:
        _, failed, ballast = await _ended_once_the_disk_is_full(client, small_disk, "exec yes")
        try:
            refused = await call_error(client, "run_background_task", command="echo hello")
        finally:
            ballast.unlink()
    assert (failed["state"], failed["exit_code"]) == ("failed", 1), failed
    assert "the disk of its log was full" in failed["end_reason"], failed
    assert "disk is full" in refused and "remove_task" in refused, refused
    assert refused.index("remove_task") < refused.index("mcp-backgroundr prune"), refused


async def test_an_exit_seen_while_the_disk_was_full_is_recorded_when_the_server_leaves_before_there_is_space(
    server_command: str, small_disk: Path
) -> None:
    async with connect(server_command) as client:
        task, status, ballast = await _ended_once_the_disk_is_full(client, small_disk, "exit 3")
        assert _recorded_exit(small_disk, task["task_id"]) is None  # not written: the disk is full
    try:
        assert (status["state"], status["exit_code"]) == ("failed", 3)
        assert _recorded_exit(small_disk, task["task_id"]) == 3
    finally:
        ballast.unlink()
