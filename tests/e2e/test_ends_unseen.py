"""End-to-end: a task that ended while no server watched it is not said to have run until it was found gone.

Its server was SIGKILLed, and it ended before the next server started (a pty task: its terminal hung up
with its server; a plain task: killed meanwhile), leaving no record of when. The CLI reading it with no
server, and the next server, say that the end is not known and between which times it came; ended_at
is the last moment it is known to have run, runtime_seconds the least it ran: never the whole gap.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from typing import Any

import anyio
import pytest

from mcp_backgroundr.store.orphans import HUNG_UP_NOTE, LEAST_RUNTIME, VANISHED_REASON

from .harness import alive, call, cli, connect, kill_server_of

pytestmark = pytest.mark.anyio

READY = "echo up; exec sleep 300"


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _check_unseen_end(shown: dict[str, Any], found_gone: float) -> None:
    """``shown`` (a status) says its task ended at an unknown time, no later than ``found_gone``."""
    assert shown["state"] == "failed", shown
    assert _seconds(shown["ended_at"]) <= found_gone, (shown["ended_at"], found_gone)
    assert shown["runtime_seconds"] <= found_gone - _seconds(shown["started_at"]), shown
    assert shown["end_reason"].startswith(f"{VANISHED_REASON}, at a time not known: after "), shown["end_reason"]
    assert f"ended_at, so {LEAST_RUNTIME}) and before " in shown["end_reason"], shown["end_reason"]


async def test_a_task_that_ended_unseen_is_not_said_to_have_run_until_it_was_found_gone(server_command: str) -> None:
    # Regression (a new-user trial): the next server recorded such a task as ended when it started,
    # and its runtime as the whole gap (669 s for a pty http.server that ran 1 s).
    async with connect(server_command) as client:
        marker = await call(client, "run_background_task", command="exec sleep 300")
        on_a_terminal = await call(client, "run_background_task", command=READY, pty=True, wait_for_pattern="up")
        plain = await call(client, "run_background_task", command=READY, wait_for_pattern="up")
        await kill_server_of(marker["pid"])
    os.kill(plain["pid"], signal.SIGKILL)
    with anyio.fail_after(10):  # the terminal hung up: the pty task ends with its server
        while alive([on_a_terminal["pid"], plain["pid"]]):
            await anyio.sleep(0.02)
    found_gone = time.time()
    tasks = (on_a_terminal, plain)

    shown = [await anyio.to_thread.run_sync(cli, server_command, "status", t["task_id"], "--json") for t in tasks]
    async with connect(server_command) as client:  # the CLI read them with no server; now the next one
        statuses = [await call(client, "get_task_status", task_id=t["task_id"], lines=0) for t in tasks]
        listed = {row["task_id"]: row for row in (await call(client, "list_tasks", all=True))["tasks"]}
    for status in [json.loads(s.stdout) for s in shown] + statuses:
        _check_unseen_end(status, found_gone)
        assert listed[status["task_id"]]["runtime_seconds"] == status["runtime_seconds"]
        assert (HUNG_UP_NOTE in status["end_reason"]) is (status["task_id"] == on_a_terminal["task_id"])
