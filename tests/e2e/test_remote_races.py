"""End-to-end: answers about a remote task that an event on its host overtakes while they are made.

The interleaving is forced, not hoped for: the host's agent is held in the middle of its answer
(its read of the task's log, a FIFO put in the log's place, blocks once it has listed the task's
processes) until the event is recorded, then let go.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from .harness import TERM_NOTING_LEFTOVER, call, connect, until
from .sshd import Sshd

pytestmark = pytest.mark.anyio

ALLOW = ("serve", "--allowed-ssh-host", "loopback")
HELD_WITHIN_SECONDS = 10.0
ENDED_WITHIN_SECONDS = 20.0
"""max_runtime's end of what a task left behind takes the default grace (5 s) and a kill."""


def _held_readers(sshd: Sshd) -> list[psutil.Process]:
    """The host's processes (below its sshd) blocked opening a FIFO that nothing writes."""
    held = []
    for process in psutil.Process(sshd.process.pid).children(recursive=True):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{process.pid}/wchan").read_text() == "wait_for_partner":
                held.append(process)
    return held


@contextlib.contextmanager
def _log_held(log: Path, sshd: Sshd) -> Iterator[None]:
    """A reader of the task's log on the host is held until the block ends: a FIFO takes the log's
    place; then the log is put back and each held reader stopped and continued (its open, restarted,
    finds the log)."""
    kept = log.with_name(log.name + ".kept")
    log.rename(kept)
    os.mkfifo(log)
    try:
        yield
    finally:
        kept.rename(log)
        for reader in _held_readers(sshd):
            reader.suspend()
            reader.resume()


async def _status_overtaken(
    client: Client, started: dict[str, Any], sshd: Sshd, overtake: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """get_task_status of the ``started`` task, its host's agent held after listing the task's
    processes and before reading its log until ``overtake`` is done."""
    status: dict[str, Any] = {}

    async def ask() -> None:
        status.update(await call(client, "get_task_status", task_id=started["task_id"]))

    async def held() -> bool:
        return bool(_held_readers(sshd))

    async with anyio.create_task_group() as group:
        with _log_held(Path(started["log_path"]), sshd):
            group.start_soon(ask)
            await until(held, HELD_WITHIN_SECONDS)
            await overtake()
    return status


def _end_reason_recorded(home: Path, task_id: str) -> str | None:
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        row = db.execute("SELECT end_reason FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else row[0]


async def test_a_status_that_max_runtime_overtakes_shows_the_processes_and_the_reason_of_one_moment(
    server_command: str, ssh_env: dict[str, str], sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    """A status asked while max_runtime_seconds ended what a finished task left on its host listed the
    processes the host saw before the end beside the reason recorded after it (lingering_pids [N] with
    'ended the processes it left behind')."""
    script, termed, ready = tmp_path / "leftover.py", tmp_path / "termed", tmp_path / "ready"
    script.write_text(TERM_NOTING_LEFTOVER)
    command = f"python3 {script} {termed} {ready} & echo up"
    reason = "max_runtime_seconds (4 s) reached: ended the processes it left behind"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command=command, host="loopback", max_runtime_seconds=4)
        task_id = started["task_id"]
        done = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20)
        assert done["status"]["state"] == "completed" and len(done["status"]["lingering_pids"]) == 1

        async def signalled() -> bool:
            return termed.exists()

        await until(signalled, 20)  # the end is under way on the host; its reason is not recorded yet
        assert ready.exists()

        async def recorded() -> bool:
            return await anyio.to_thread.run_sync(_end_reason_recorded, home, task_id) == reason

        status = await _status_overtaken(
            client, started, sshd, functools.partial(until, recorded, ENDED_WITHIN_SECONDS)
        )
        assert (status["end_reason"], status["lingering_pids"]) == (reason, [])


async def test_a_status_whose_task_ends_while_its_host_answers_does_not_list_the_task_as_left_behind(
    server_command: str, ssh_env: dict[str, str], sshd: Sshd, tmp_path: Path
) -> None:
    """The host listed a running task's processes; its exit, heard meanwhile by the host's watch, was
    shown with them: state completed, and its own processes, which had exited, as lingering_pids."""
    go = tmp_path / "go"
    command = f"echo up; while [ ! -e {go} ]; do sleep 0.1; done"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command=command, host="loopback", wait_for_pattern="up")

        async def ended() -> bool:
            listed = await call(client, "list_tasks")  # asks no host: the watch's news
            return bool(listed["tasks"][0]["state"] == "completed")

        async def end_it() -> None:
            go.touch()
            await until(ended, HELD_WITHIN_SECONDS)

        status = await _status_overtaken(client, started, sshd, end_it)
        shown = (status["state"], tuple(status["lingering_pids"]), status["process_count"] > 0)
        assert shown in {("running", (), True), ("completed", (), False)}, status
