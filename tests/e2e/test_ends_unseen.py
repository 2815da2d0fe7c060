"""End-to-end: a task that ended while no server watched it is not said to have run until it was found gone.

Its server was SIGKILLed, and it ended before the next server started (a pty task: its terminal hung up
with its server; a plain task: killed meanwhile), leaving no record of how. The log-capping process the
dead server left saw when it ended, and wrote it down: the CLI reading it with no server, and the next
server, say it ended then. With that process killed too (as after a reboot), they say that the end is not
known and between which times it came: ended_at is the last moment it is known to have run,
runtime_seconds the least it ran. Never the whole gap.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from mcp_backgroundr.models import end_seen_path
from mcp_backgroundr.store.orphans import (
    CAPPER,
    EXITED_REASON,
    HUNG_UP_NOTE,
    LEAST_RUNTIME,
    UNKNOWN_END_REASON,
    VANISHED_REASON,
)

from .harness import alive, call, cli, connect, finished, kill_server_of

pytestmark = pytest.mark.anyio

READY = "echo up; exec sleep 300"


@dataclass
class Crash:
    """Two tasks whose server was SIGKILLed, ended before the next server started."""

    on_a_terminal: dict[str, Any]
    plain: dict[str, Any]
    done: dict[str, Any]
    """A task whose end its server recorded before the crash."""
    crashed_at: float
    """Just before the SIGKILL: neither task had ended yet."""
    found_gone: float
    """Once both were seen gone (and what the capping process saw of it written, if it runs)."""


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def _crash(server_command: str, capping_too: bool) -> Crash:
    async with connect(server_command) as client:
        marker = await call(client, "run_background_task", command="exec sleep 300")
        done = await call(client, "run_background_task", command="true")
        await finished(client, done["task_id"])
        on_a_terminal = await call(client, "run_background_task", command=READY, pty=True, wait_for_pattern="up")
        plain = await call(client, "run_background_task", command=READY, wait_for_pattern="up")
        crashed_at = time.time()
        await kill_server_of(marker["pid"], capping_too)
    os.kill(plain["pid"], signal.SIGKILL)
    with anyio.fail_after(10):  # the terminal hung up: the pty task ends with its server
        while alive([on_a_terminal["pid"], plain["pid"]]):
            await anyio.sleep(0.02)
    if not capping_too:  # what the capping process saw is written a moment after it saw it
        notes = [Path(end_seen_path(t["log_path"])) for t in (on_a_terminal, plain)]
        with anyio.fail_after(10):
            while not all(note.exists() for note in notes):
                await anyio.sleep(0.02)
    return Crash(on_a_terminal, plain, done, crashed_at, time.time())


async def _shown(server_command: str, crash: Crash) -> list[dict[str, Any]]:
    """The statuses of the crash's tasks: the CLI's with no server, then the next server's, whose
    list_tasks rows show their runtimes alike."""
    tasks = (crash.on_a_terminal, crash.plain)
    shown = [await anyio.to_thread.run_sync(cli, server_command, "status", t["task_id"], "--json") for t in tasks]
    async with connect(server_command) as client:
        statuses = [await call(client, "get_task_status", task_id=t["task_id"], lines=0) for t in tasks]
        listed = {row["task_id"]: row for row in (await call(client, "list_tasks", all=True))["tasks"]}
    for status in statuses:
        assert listed[status["task_id"]]["runtime_seconds"] == status["runtime_seconds"]
    return [json.loads(s.stdout) for s in shown] + statuses


def _check(status: dict[str, Any], crash: Crash) -> None:
    """What every status of a crash's task says: failed, ended before it was found gone, not later."""
    assert status["state"] == "failed", status
    assert _seconds(status["ended_at"]) <= crash.found_gone, (status["ended_at"], crash.found_gone)
    assert status["runtime_seconds"] <= crash.found_gone - _seconds(status["started_at"]), status
    assert status["end_reason"].startswith(VANISHED_REASON), status["end_reason"]
    on_a_terminal = status["task_id"] == crash.on_a_terminal["task_id"]
    assert (HUNG_UP_NOTE in status["end_reason"]) is on_a_terminal, status["end_reason"]


async def test_a_task_that_ended_unseen_is_said_to_have_ended_when_its_dead_servers_capper_saw_it(
    server_command: str,
) -> None:
    # Regression (a new-user trial): the next server recorded such a task as ended when it started,
    # and its runtime as the whole gap (669 s for a pty http.server that ran 1 s).
    crash = await _crash(server_command, capping_too=False)
    no_news = not Path(end_seen_path(crash.done["log_path"])).exists()  # its end was recorded
    for status in await _shown(server_command, crash):
        _check(status, crash)
        assert _seconds(status["ended_at"]) >= crash.crashed_at, (status["ended_at"], crash.crashed_at)
        # Seen to end, or found ended when the capping process found the server gone: a terminal's task
        # ends with its server, and the plain one may be killed before that process has looked.
        seen = f"{VANISHED_REASON}, seen to end at {status['ended_at']} by {CAPPER}"
        with_its_server = f"{VANISHED_REASON}, by {status['ended_at']}, when {CAPPER} found its server gone"
        assert status["end_reason"].startswith((seen, with_its_server)), status["end_reason"]
    assert no_news


async def test_a_task_that_ended_unseen_with_no_capper_left_says_between_which_times_it_ended(
    server_command: str,
) -> None:
    crash = await _crash(server_command, capping_too=True)
    for status in await _shown(server_command, crash):
        _check(status, crash)
        assert status["end_reason"].startswith(f"{VANISHED_REASON}, at a time not known: after "), status
        assert f"ended_at, so {LEAST_RUNTIME}) and before " in status["end_reason"], status["end_reason"]


async def test_a_keep_running_task_that_ended_unseen_ends_when_its_runner_says_or_says_it_does_not_know(
    server_command: str,
) -> None:
    # Its runner records its end (the child ended first); a runner SIGKILLed first records nothing,
    # and its task was recorded as ended when the next server started, the whole gap its runtime.
    async with connect(server_command) as client:
        marker = await call(client, "run_background_task", command="exec sleep 300")
        recorded, unrecorded = [
            await call(client, "run_background_task", command="exec sleep 300", keep_running=True) for _ in range(2)
        ]
        await kill_server_of(marker["pid"])
    ended_from = time.time()
    for task, runner_first in ((recorded, False), (unrecorded, True)):
        runner = psutil.Process(task["pid"])
        with anyio.fail_after(10):  # the start answers before the runner has started the command
            while not (command := runner.children(recursive=True)):
                await anyio.sleep(0.02)
        for process in [runner, *command] if runner_first else command:
            process.kill()
        _, running = psutil.wait_procs([runner, *command], timeout=10)  # a runner records its command's end
        assert not running
    found_gone = time.time()
    async with connect(server_command) as client:
        shown = [await call(client, "get_task_status", task_id=t["task_id"], lines=0) for t in (recorded, unrecorded)]
    assert ended_from <= _seconds(shown[0]["ended_at"]) <= found_gone, shown[0]
    assert (shown[0]["state"], shown[0]["signal"], shown[0]["end_reason"]) == ("failed", "SIGKILL", EXITED_REASON)
    assert _seconds(shown[1]["ended_at"]) <= found_gone, shown[1]
    assert shown[1]["end_reason"].startswith(f"{UNKNOWN_END_REASON}, at a time not known: after "), shown[1]
