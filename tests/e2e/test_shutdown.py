"""End-to-end: when its client goes away or it is signalled, the server ends every task."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr.logs import capping as capping_process

from ..reliability.rawwire import RawServer
from .harness import alive, call, connect, finished, held_by_the_v1_freezer, needs_the_v1_freezer, on_a_terminal

pytestmark = pytest.mark.anyio

TASKS_AT_DISCONNECT = 200


async def test_client_disconnect_ends_200_tasks_before_the_client_would_signal(
    server_command: str, tmp_path: Path
) -> None:
    errlog_path = tmp_path / "server.err"
    with errlog_path.open("w") as errlog:
        async with connect(server_command, errlog=errlog) as client:
            pids = []
            for index in range(TASKS_AT_DISCONNECT):
                command = "sleep 300 & sleep 300" if index % 2 else "trap '' TERM; sleep 300"
                pids.append((await call(client, "run_background_task", command=command))["pid"])
            server_pid = psutil.Process(pids[0]).ppid()
    # The SDK client closes stdin and waits 2 s before it sends SIGTERM: the server must have ended
    # every task and exited by itself, which its last line on stderr records.
    last_line = errlog_path.read_text().strip().splitlines()[-1]
    assert last_line.startswith(f"mcp-backgroundr: client closed stdin; ended {TASKS_AT_DISCONNECT} task(s)")
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    assert alive(pids) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_ends_the_server_and_its_tasks(
    server_command: str, tmp_path: Path, signum: signal.Signals
) -> None:
    errlog_path = tmp_path / "server.err"
    with errlog_path.open("w") as errlog:
        async with connect(server_command, errlog=errlog) as client:
            task = await call(client, "run_background_task", command="sleep 300 & sleep 300")
            server = psutil.Process(psutil.Process(task["pid"]).ppid())
            children = [p.pid for p in psutil.Process(task["pid"]).children(recursive=True)]
            server.send_signal(signum)
            with anyio.fail_after(5):
                while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.02)
    assert f"{signum.name} received; ended 1 task(s)" in errlog_path.read_text()
    assert alive([task["pid"], *children]) == []


def test_on_a_terminal_it_says_it_is_an_mcp_server_and_writes_nothing_to_stdout(server_command: str) -> None:
    hint, stdout, returncode = on_a_terminal([server_command])
    assert "MCP server" in hint
    assert "claude mcp add" in hint
    assert stdout == b""
    assert returncode == 0, sys.stderr


async def test_tasks_of_a_server_killed_by_sigkill_are_ended_by_the_next_server(
    server_command: str, home: Path
) -> None:
    async with connect(server_command) as client:
        tree = await call(client, "run_background_task", command="sleep 300 & sleep 300")
        daemon = await call(client, "run_background_task", command="setsid sleep 300 & echo detached")
        done = await call(client, "run_background_task", command="exit 4")
        server = psutil.Process(psutil.Process(tree["pid"]).ppid())
        children = [p.pid for p in psutil.Process(tree["pid"]).children(recursive=True)]
        await finished(client, daemon["task_id"])
        await finished(client, done["task_id"])
        server.kill()
        with anyio.fail_after(5):
            while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.02)
    assert alive([tree["pid"], *children]) != []  # the crash left them running
    async with connect(server_command) as client:
        assert (await call(client, "list_tasks"))["tasks"] == []
        assert alive([tree["pid"], *children]) == []
    with sqlite3.connect(home / "registry.sqlite3") as db:
        rows = dict(db.execute("SELECT task_id, state || ' ' || coalesce(exit_code, '-') FROM tasks").fetchall())
        reason = db.execute("SELECT end_reason FROM tasks WHERE task_id = ?", (tree["task_id"],)).fetchone()[0]
    assert rows == {tree["task_id"]: "killed -", daemon["task_id"]: "completed 0", done["task_id"]: "failed 4"}
    assert "crashed or was SIGKILLed" in reason


def test_sigterm_during_the_shutdown_after_stdin_closes_does_not_cut_it_short(
    server_command: str, home: Path, tmp_path: Path
) -> None:
    # The SDK's stdio client closes stdin, then sends SIGTERM 2 s later: a shutdown still ending
    # tasks then must go on, and record every task, before the server exits.
    errors = tmp_path / "server.err"
    with errors.open("wb") as sink, RawServer(server_command, stderr=sink) as server:
        server.initialize()
        started = []
        for index in range(3):
            command = f"trap 'echo term-{index}' TERM; while :; do sleep 0.05; done"
            answer = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": command}})
            started.append(answer["result"]["structuredContent"])
        assert server.process.stdin is not None
        server.process.stdin.close()
        # The shutdown has begun once a task got its SIGTERM (they ignore it: the 0.8 s grace runs).
        # On a machine so loaded that the kill comes before any task could log it, the server may
        # be done before the signal is sent; the records must hold either way.
        deadline = time.monotonic() + 10
        while server.process.poll() is None and not any(
            f"term-{i}" in Path(t["log_path"]).read_text() for i, t in enumerate(started)
        ):
            assert time.monotonic() < deadline, "the tasks got no SIGTERM after stdin closed"
            time.sleep(0.005)
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        states = db.execute("SELECT state, end_reason FROM tasks").fetchall()
    assert states == [("killed", "server shutdown")] * 3
    assert alive([t["pid"] for t in started]) == []
    assert "client closed stdin; ended 3 task(s)" in errors.read_text()


def test_a_sigterm_to_the_servers_process_group_does_not_restart_its_capping_process(
    server_command: str, tmp_path: Path
) -> None:
    """`timeout 10 mcp-backgroundr serve ...` signals the server's whole process group: its capping
    process ended with the server's SIGTERM, and the server, ending its tasks, said "the capping
    process ended (-15); starting it again" and started another on its way out."""
    errors = tmp_path / "server.err"
    with errors.open("wb") as sink, RawServer(server_command, stderr=sink, process_group=0) as server:
        server.initialize()
        command = "trap 'echo term' TERM; while :; do sleep 0.05; done"  # the shutdown waits out its grace
        answer = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": command}})
        task = answer["result"]["structuredContent"]
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(10) == 0
    said = errors.read_text()
    assert "SIGTERM received; ended 1 task(s)" in said, said
    assert "capping process" not in said, said
    assert alive([task["pid"]]) == []


def test_a_sigterm_to_the_server_and_its_capping_process_at_once_does_not_restart_it(
    server_command: str, tmp_path: Path
) -> None:
    """A SIGTERM to every process of the server (systemd stopping its unit's cgroup, `pkill -f`)
    reaches the capping process too, in its own process group or not: a server that is leaving
    must not take its end for a failure, nor start it again."""
    errors = tmp_path / "server.err"
    with errors.open("wb") as sink, RawServer(server_command, stderr=sink) as server:
        server.initialize()
        command = "trap 'echo term' TERM; while :; do sleep 0.05; done"  # the shutdown waits out its grace
        answer = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": command}})
        task = answer["result"]["structuredContent"]
        children = psutil.Process(server.process.pid).children()
        (capping,) = [child for child in children if capping_process.__name__ in child.cmdline()]
        server.process.send_signal(signal.SIGTERM)
        capping.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
    said = errors.read_text()
    assert "SIGTERM received; ended 1 task(s)" in said, said
    assert "capping process" not in said, said
    assert alive([task["pid"]]) == []


@pytest.mark.parametrize("host", [None, "loopback"])
def test_an_end_under_way_when_stdin_closes_does_not_hold_the_exit_for_its_whole_grace(
    server_command: str,
    home: Path,
    tmp_path: Path,
    host: str | None,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An end_background_task with a long grace, under way when the client closed stdin, held the
    server's exit for all of it (20 s for grace 20, while stderr said "ended 0 task(s) in 0.39s"):
    the end is shielded, and the SDK waits for its handlers before the server could shut down. The
    end now shortens what is left of its grace to the shutdown's once the client has gone; on a
    remote host too, whose agent ends the processes there (its agent went on with all of the grace,
    and the end was not answered: a -32000 "still running 1.4 s later", the shutdown's own end cut it off)."""
    grace = 60
    errors = tmp_path / "server.err"
    args: tuple[str, ...] = ()
    if host is not None:
        for name, value in request.getfixturevalue("ssh_env").items():
            monkeypatch.setenv(name, value)
        args = ("serve", "--allowed-ssh-host", host)
    with errors.open("wb") as sink, RawServer(server_command, stderr=sink, args=args) as server:
        server.initialize()
        command = "trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done"
        arguments = {"command": command, "wait_for_pattern": "ready", "host": host}
        started = server.request("tools/call", {"name": "run_background_task", "arguments": arguments})
        task = started["result"]["structuredContent"]
        end = {"name": "end_background_task", "arguments": {"task_id": task["task_id"], "grace_seconds": grace}}
        server.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": end}).encode())
        deadline = time.monotonic() + 10
        while "term" not in Path(task["log_path"]).read_text():  # a remote host is this machine
            assert time.monotonic() < deadline, "the task got no SIGTERM from end_background_task"
            time.sleep(0.01)
        assert server.process.stdin is not None
        server.process.stdin.close()
        closed_at = time.monotonic()
        answer = server.answer()
        assert server.process.wait(grace / 2) == 0
        exited_after = time.monotonic() - closed_at
    assert answer["id"] == 7 and "result" in answer, answer  # answered within the wait for requests in flight
    assert answer["result"]["structuredContent"]["state"] == "killed", answer
    assert exited_after < grace / 4, f"the server exited {exited_after:.1f} s after stdin closed (grace {grace} s)"
    assert alive([task["pid"]]) == []
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        assert db.execute("SELECT state FROM tasks").fetchall() == [("killed",)]


@needs_the_v1_freezer
async def test_a_shutdown_that_leaves_a_process_says_so_on_stderr_with_its_pid_and_command(
    server_command: str, home: Path, tmp_path: Path
) -> None:
    errlog_path = tmp_path / "server.err"
    with contextlib.ExitStack() as frozen, errlog_path.open("w") as errlog:
        async with connect(server_command, errlog=errlog) as client:
            task = await call(client, "run_background_task", command="sleep 300")
            frozen.enter_context(held_by_the_v1_freezer(task["pid"], f"mcp-backgroundr-test-{task['task_id']}"))
        said = errlog_path.read_text()
        assert f"left running at shutdown: pid {task['pid']} (sleep 300): in uninterruptible sleep" in said, said
        assert "client closed stdin; ended 1 task(s)" in said, said
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        (cgroup,) = db.execute("SELECT cgroup FROM tasks").fetchone()
    for directory in cgroup.split("\n") if cgroup else []:  # kept while it held the survivor
        Path(directory).rmdir()
