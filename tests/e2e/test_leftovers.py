"""End-to-end: what a finished task left running is looked for and ended once, and the registry says so.

Whoever ends a task's leftovers (its server when it ends the task, its runtime limit, its server's
exit, the next server after a crash) records it in the task's ``leftovers_ended``; the next server
looks for the leftovers of a dead server's finished task only while that is false, and leaves the
task's ``end_reason`` alone when it found none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_backgroundr.config import HOME_ENV, TASK_ID_ENV
from mcp_backgroundr.store.orphans import NONE_FOUND_REASON

from .harness import alive, call, connect, finished, held_by_the_v1_freezer, kill_server_of, needs_the_v1_freezer

pytestmark = pytest.mark.anyio

RUNTIME_REASON = "max_runtime_seconds (1 s) reached: ended the processes it left behind"


async def _marker(client: Client) -> dict[str, Any]:
    """A running task whose pid leads to its server (to SIGKILL it)."""
    return await call(client, "run_background_task", command="exec sleep 300")


async def _reason_of(client: Client, task: dict[str, Any]) -> str | None:
    reason: str | None = (await call(client, "get_task_status", task_id=task["task_id"], lines=0))["end_reason"]
    return reason


async def test_the_next_server_leaves_alone_what_max_runtime_ended(server_command: str) -> None:
    # Regression: the next server after a crash looked once more for the processes of a task whose
    # leftovers its runtime limit had ended, and put "exited; " before its end_reason.
    async with connect(server_command) as client:
        marker = await _marker(client)
        task = await call(
            client, "run_background_task", command="sleep 300 > /dev/null & exit 0", max_runtime_seconds=1
        )
        with anyio.fail_after(30):
            while await _reason_of(client, task) is None:
                await anyio.sleep(0.05)
        await kill_server_of(marker["pid"])
    async with connect(server_command) as client:
        reason = await _reason_of(client, task)
    assert reason == RUNTIME_REASON


async def test_the_next_server_leaves_the_reason_of_a_task_that_left_nothing_running(server_command: str) -> None:
    # Regression: a task that ended by itself and left nothing running got "exited; ..." (and the
    # note of what its containment level can find) first in its end_reason from the next server, after
    # its server exited as after its server was SIGKILLed.
    async with connect(server_command) as client:
        clean = await call(client, "run_background_task", command="true")
        await finished(client, clean["task_id"])
    async with connect(server_command) as client:
        marker = await _marker(client)
        crashed = await call(client, "run_background_task", command="true")
        await finished(client, crashed["task_id"])
        await kill_server_of(marker["pid"])
    async with connect(server_command) as client:
        reasons = [await _reason_of(client, task) for task in (clean, crashed)]
        twice = [await _reason_of(client, task) for task in (clean, crashed)]
    async with connect(server_command) as client:
        later = [await _reason_of(client, task) for task in (clean, crashed)]
        contained = (await call(client, "get_task_status", task_id=crashed["task_id"], lines=0))["containment"]
    # Below the cgroup level, what the next server could not look for is said (test_containment.py).
    looked = None if contained == "cgroup" else f"{NONE_FOUND_REASON}; at the {contained} containment level"
    assert reasons == twice == later, (reasons, twice, later)
    assert reasons[0] is None
    assert reasons[1] == looked or (looked is not None and (reasons[1] or "").startswith(looked)), reasons


@pytest.mark.linux_backend("max_processes needs a cgroup per task")
async def test_a_reason_that_starts_with_exited_does_not_hide_what_a_task_left_running(server_command: str) -> None:
    # Regression: an end_reason that began with "exited" counted as the next server's own mark that
    # it had ended what the task left running: a task that failed at max_processes ("exited with
    # code 2 after max_processes ...") kept its leftover process past its server's crash and the next server.
    async with connect(server_command) as client:
        marker = await _marker(client)
        command = "sleep 300 > /dev/null & echo $!; sleep 301 & wait"  # the second sleep is refused its fork
        task = await call(client, "run_background_task", command=command, max_processes=2)
        status = await finished(client, task["task_id"])
        assert status["end_reason"].startswith("exited with code 2 after max_processes (2)"), status
        left = int(status["output"].split()[0])
        assert alive([left]) == [left]
        await kill_server_of(marker["pid"])
    async with connect(server_command) as client:
        with anyio.fail_after(10):
            while alive([left]):
                await anyio.sleep(0.02)
        reason = await _reason_of(client, task)
    assert reason is not None and reason.startswith("processes it left behind outlived its server"), reason


@needs_the_v1_freezer
async def test_a_process_that_outlives_the_next_servers_end_is_said_to(server_command: str, home: Path) -> None:
    """The next server after a crash recorded a dead server's task as ended (its cgroup 'emptied and
    removed') whatever its end found: here the task's process outlives its SIGKILL (held by the v1
    freezer, as a process in uninterruptible sleep is) and still runs when the reason is read."""
    async with connect(server_command) as client:
        marker = await _marker(client)
        task = await call(client, "run_background_task", command="exec sleep 300")
        with held_by_the_v1_freezer(task["pid"], f"mcp-backgroundr-test-{task['task_id']}"):
            await kill_server_of(marker["pid"])
            async with connect(server_command) as client:
                with anyio.fail_after(30):  # the next server's end: the default grace (5 s) and kill wait (2 s)
                    while (reason := await _reason_of(client, task)) is None:
                        await anyio.sleep(0.05)
                assert alive([task["pid"]]) == [task["pid"]]
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        (cgroup,) = db.execute("SELECT cgroup FROM tasks WHERE task_id = ?", (task["task_id"],)).fetchone()
    for directory in cgroup.split("\n") if cgroup else []:  # kept while it held the survivor
        Path(directory).rmdir()
    assert "emptied and removed" not in reason, reason
    assert f"but 1 process outlived SIGKILL: pid {task['pid']} (sleep 300): in uninterruptible sleep" in reason, reason


SCHEMA_6 = (
    "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, name TEXT, command TEXT, cwd TEXT, log_path TEXT, owner TEXT,"
    " started_at REAL NOT NULL, state TEXT, pid INTEGER, pid_create_time REAL, exit_code INTEGER, signal TEXT,"
    " kill_requested INTEGER NOT NULL DEFAULT 0, ended_at REAL, end_reason TEXT, keep_running INTEGER NOT NULL"
    " DEFAULT 0, restart TEXT NOT NULL DEFAULT 'no', max_restarts INTEGER NOT NULL DEFAULT 0, max_log_bytes INTEGER"
    " NOT NULL DEFAULT 0, max_runtime_seconds REAL, containment TEXT NOT NULL DEFAULT 'marker', cgroup TEXT,"
    " max_memory_bytes INTEGER, max_processes INTEGER, host TEXT, host_seen_at REAL, host_output_bytes INTEGER,"
    " host_dropped_bytes INTEGER NOT NULL DEFAULT 0, stdin TEXT);"
    "CREATE INDEX tasks_owner_started ON tasks (owner, started_at);"
    "PRAGMA journal_mode = WAL;"
    "PRAGMA user_version = 6;"
)
"""The registry as the version before ``leftovers_ended`` wrote it (schema 6)."""


def _old_registry(path: Path, tasks: dict[str, str | None], logs: Path) -> None:
    """A schema-6 registry at ``path`` holding a finished task (id: its end_reason) of each of
    ``tasks``, whose server on this host is gone."""
    gone_pid = _a_pid_that_is_gone()
    owner = f"{socket.gethostname()}:{gone_pid}:1.00"
    started = time.time() - 60
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(SCHEMA_6)
        for task_id, reason in tasks.items():
            log = logs / f"{task_id}.log"
            log.write_text("")
            db.execute(
                "INSERT INTO tasks (task_id, command, cwd, log_path, owner, started_at, state, pid, pid_create_time,"
                " exit_code, ended_at, end_reason) VALUES (?, 'sleep 300 &', '/', ?, ?, ?, 'completed', ?, ?, 0, ?, ?)",
                (task_id, str(log), owner, started, gone_pid, started, started + 1, reason),
            )


def _a_pid_that_is_gone() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _left_running(task_id: str) -> subprocess.Popen[bytes]:
    """A process a finished task left running: its own session, the task's marker in its environment."""
    env = {**os.environ, TASK_ID_ENV: task_id}
    return subprocess.Popen(["sleep", "300"], env=env, start_new_session=True, stdin=subprocess.DEVNULL)


async def test_a_registry_of_the_previous_schema_opens_and_keeps_what_it_knew_of_leftovers(server_command: str) -> None:
    # Its "exited" end_reason (a server had ended what the task left running) becomes
    # leftovers_ended; a finished task without one is still looked at by the next server.
    home = Path(os.environ[HOME_ENV])
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    _old_registry(home / "registry.sqlite3", {"tsettled": "exited", "tunsettled": None}, home / "logs")
    settled, unsettled = _left_running("tsettled"), _left_running("tunsettled")
    try:
        async with connect(server_command) as client:
            listed = await call(client, "list_tasks", all=True)
            reasons = {t: await _reason_of(client, {"task_id": t}) for t in ("tsettled", "tunsettled")}
        assert unsettled.wait(10) is not None
        assert settled.poll() is None  # no server looks for it again
    finally:
        for left in (settled, unsettled):
            left.kill()
            left.wait()
    assert {t["task_id"] for t in listed["tasks"]} == {"tsettled", "tunsettled"}
    assert reasons["tsettled"] == "exited"
    assert (reasons["tunsettled"] or "").startswith("processes it left behind outlived its server"), reasons
