"""End-to-end: two servers on one state directory at once."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil
import pytest

from mcp_backgroundr.config import HOME_ENV
from mcp_backgroundr.platform import process
from mcp_backgroundr.store import orphans

from ..reliability.rawwire import RawServer
from .harness import alive, call, connect, kill_server_of, until

pytestmark = pytest.mark.anyio


async def test_two_servers_see_their_own_tasks_and_can_reach_each_others(server_command: str) -> None:
    async with connect(server_command) as first, connect(server_command) as second:
        mine = await call(first, "run_background_task", command="echo first; sleep 300", wait_for_pattern="first")
        theirs = await call(second, "run_background_task", command="sleep 300")
        own_view = await call(second, "list_tasks")
        everything = await call(second, "list_tasks", all=True)
        status = await call(second, "get_task_status", task_id=mine["task_id"])
        waited = await call(second, "wait_for_task", task_id=mine["task_id"], output_pattern="first", since=0)
        ended = await call(second, "end_background_task", task_id=mine["task_id"])
        seen_by_owner = await call(first, "get_task_status", task_id=mine["task_id"])
    assert [t["task_id"] for t in own_view["tasks"]] == [theirs["task_id"]]
    listed = {t["task_id"]: t["owner"] for t in everything["tasks"]}
    assert set(listed) == {mine["task_id"], theirs["task_id"]}
    assert listed[mine["task_id"]] != listed[theirs["task_id"]]
    assert (status["state"], status["output"]) == ("running", "first\n")
    assert waited["reason"] == "pattern"
    assert ended["state"] == "killed"
    assert ended["survivors"] == []
    assert seen_by_owner["state"] == "killed"
    assert seen_by_owner["kill_requested"] is True
    assert alive([mine["pid"], theirs["pid"]]) == []


CLI_SECONDS = 30
REAPED_SECONDS = 10
REAPS_AT_ONCE = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: a dead server's tasks come here
subprocess.Popen(sys.argv[1:])
while True:  # the server, then each orphan the moment it exits, until none is left
    try:
        os.wait()
    except ChildProcessError:
        break
"""
"""A parent that makes itself the subreaper of the server and reaps every process it gets at once,
as a machine's init does. Without it a dead server's tasks go to whatever reaps orphans here, when
it gets to them: this machine's process 1 looks every 2 s, and a container's may never look."""


def _cli_state(server_command: str, task_id: str) -> str:
    """The STATE column of ``mcp-backgroundr ps --all`` for one task."""
    table = subprocess.run(
        [server_command, "ps", "--all"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=CLI_SECONDS, check=True,
    ).stdout  # fmt: skip
    row = next(line.split() for line in table.splitlines() if line.startswith(task_id))
    return row[2]


async def test_ps_and_list_tasks_agree_on_a_task_that_ended_after_its_server_died(
    server_command: str, tmp_path: Path
) -> None:
    # Regression (issue 13): the CLI worked out on its own how a dead server's task stands, and
    # a live server did not: `ps` said failed where list_tasks(all=true) and status said running.
    wrapper = tmp_path / "reaps_at_once.py"
    wrapper.write_text(REAPS_AT_ONCE)
    async with connect(server_command) as live:
        with RawServer(sys.executable, args=[str(wrapper), server_command]) as crashed:
            crashed.initialize()
            arguments = {"command": "exec sleep 300"}
            answer = crashed.request("tools/call", {"name": "run_background_task", "arguments": arguments})
            task = answer["result"]["structuredContent"]
            await kill_server_of(task["pid"])
            psutil.Process(task["pid"]).kill()  # it ends with no server to see it

            async def reaped() -> bool:
                return process.create_time(task["pid"]) is None

            await until(reaped, REAPED_SECONDS)
        listed = await call(live, "list_tasks", all=True)
        status = await call(live, "get_task_status", task_id=task["task_id"])
        cli = await anyio.to_thread.run_sync(_cli_state, server_command, task["task_id"])
    tool = next(t["state"] for t in listed["tasks"] if t["task_id"] == task["task_id"])
    assert (cli, tool, status["state"]) == ("failed", "failed", "failed")


def _tool(server: RawServer, name: str, **arguments: object) -> dict[str, Any]:
    """Call a tool over raw pipes; its structured answer."""
    answer = server.request("tools/call", {"name": name, "arguments": arguments})
    content: dict[str, Any] = answer["result"]["structuredContent"]
    return content


def _crashed_with_a_keep_running_task(server_command: str) -> dict[str, Any]:
    """A keep_running task whose server was SIGKILLed."""
    with RawServer(server_command) as crashed:
        crashed.initialize()
        task = _tool(crashed, "run_background_task", command="exec sleep 300", keep_running=True)
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(10)
    return task


def _open_the_registry(server: RawServer, registry: Path) -> bool:
    return any(Path(f.path) == registry for f in psutil.Process(server.process.pid).open_files())


async def test_two_servers_starting_together_take_over_a_dead_servers_task_once(server_command: str) -> None:
    # Regression (a new-user trial): both servers found the task left behind and both adopted
    # it; each listed it as its own while the registry named one of them. The test holds the
    # registry's write lock until both servers have opened it, so both read it before either writes.
    task = _crashed_with_a_keep_running_task(server_command)
    registry = Path(os.environ[HOME_ENV]) / "registry.sqlite3"
    lock = sqlite3.connect(registry, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    servers = [RawServer(server_command), RawServer(server_command)]
    try:
        for server in servers:
            await until(functools.partial(anyio.to_thread.run_sync, _open_the_registry, server, registry))
        lock.execute("COMMIT")
        for server in servers:
            await anyio.to_thread.run_sync(server.initialize)
        listed = [await anyio.to_thread.run_sync(functools.partial(_tool, s, "list_tasks")) for s in servers]
        ended = await anyio.to_thread.run_sync(
            functools.partial(_tool, servers[0], "end_background_task", task_id=task["task_id"])
        )
    finally:
        lock.close()
        for server in servers:
            server.__exit__(None, None, None)
    owners = [i for i, answer in enumerate(listed) if task["task_id"] in {t["task_id"] for t in answer["tasks"]}]
    assert len(owners) == 1
    assert ended["state"] == "killed"
    assert alive([task["pid"]]) == []


def _crashed_with_a_task(server_command: str) -> dict[str, Any]:
    """An ordinary task whose server was SIGKILLed (while another server runs)."""
    with RawServer(server_command) as crashed:
        crashed.initialize()
        task = _tool(crashed, "run_background_task", command="exec sleep 300")
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(10)
    return task


async def test_a_running_server_ends_the_task_of_a_server_that_crashed_beside_it(server_command: str) -> None:
    # Regression (a new-user trial): list_tasks(all=true) showed the crashed server's task as
    # plainly running, and it ran on after the live server exited; only a server started later ended it.
    async with connect(server_command) as live:
        task = _crashed_with_a_task(server_command)
        listed = await call(live, "list_tasks", all=True)
        assert alive([task["pid"]]) == []
        status = await call(live, "get_task_status", task_id=task["task_id"])
    assert next(t["state"] for t in listed["tasks"] if t["task_id"] == task["task_id"]) == "killed"
    assert (status["state"], status["end_reason"].startswith(orphans.GONE_SERVER)) == ("killed", True)


async def test_a_server_that_exits_ends_the_task_of_a_server_that_crashed_beside_it(server_command: str) -> None:
    async with connect(server_command):
        task = _crashed_with_a_task(server_command)
    assert alive([task["pid"]]) == []
