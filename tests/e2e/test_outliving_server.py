"""End-to-end: tasks that outlive their server stay fully usable from the next one.

Every Inspector CLI call and every editor reload starts a new stdio server, so a task
of an earlier session must still take input and be removable.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from ..reliability.rawwire import RawServer
from .harness import alive, call, call_error, cli, connect, finished, kill_server_of

pytestmark = pytest.mark.anyio


def _allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


async def test_any_server_removes_a_finished_task_of_a_server_that_is_gone(server_command: str) -> None:
    async with connect(server_command) as client:
        done = await call(client, "run_background_task", command="echo earlier")
        await finished(client, done["task_id"])
    on_disk = _allocated(done["log_path"])
    async with connect(server_command) as client:
        removed = await call(client, "remove_task", task_id=done["task_id"])
        listing = await call(client, "list_tasks", all=True)
    assert removed["freed_bytes"] == on_disk > 0  # the disk freed (its blocks), not the 8 bytes written
    assert listing["tasks"] == []


async def test_a_task_of_another_server_that_still_runs_is_refused_and_left_alone(server_command: str) -> None:
    async with connect(server_command) as owner, connect(server_command) as other:
        task = await call(owner, "run_background_task", command="sleep 300")
        refused = await call_error(other, "remove_task", task_id=task["task_id"])
        status = await call(owner, "get_task_status", task_id=task["task_id"])
        done = await call(owner, "run_background_task", command="echo done", wait_for_pattern="never")
        shown = await call_error(other, "remove_task", task_id=done["task_id"])
        on_disk = _allocated(done["log_path"])
        removed = await call(owner, "remove_task", task_id=done["task_id"])
    assert "running" in refused and "end_background_task" in refused
    assert status["state"] == "running"
    assert "still runs" in shown and "remove it there" in shown
    assert removed["freed_bytes"] == on_disk > 0


async def test_a_keep_running_task_with_stdin_takes_input_from_the_next_server_and_the_cli(
    server_command: str,
) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", stdin=True, keep_running=True)
        await call(client, "send_task_input", task_id=task["task_id"], text="from the first server")
        await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="first", since=0)
    assert alive([task["pid"]]) == [task["pid"]]  # no end-of-input when its server exited
    async with connect(server_command) as client:
        status = await call(client, "get_task_status", task_id=task["task_id"])
        sent = await call(client, "send_task_input", task_id=task["task_id"], text="from the second server")
        echoed = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="second", since=sent["cursor"]
        )
    assert status["state"] == "running"
    assert echoed["reason"] == "pattern"
    by_cli = await anyio.to_thread.run_sync(cli, server_command, "send", task["task_id"], "from the command line")
    closed = await anyio.to_thread.run_sync(cli, server_command, "send", "--close", task["task_id"], "last")
    assert (by_cli.returncode, by_cli.stderr) == (0, "") and "wrote 22 bytes" in by_cli.stdout
    assert closed.returncode == 0 and "closed" in closed.stdout
    async with connect(server_command) as client:
        ended = await finished(client, task["task_id"])
        late = await call_error(client, "send_task_input", task_id=task["task_id"], text="late")
    assert (ended["state"], ended["exit_code"]) == ("completed", 0)  # cat read end-of-input: closed on purpose
    assert ended["output"] == "from the first server\nfrom the second server\nfrom the command line\nlast\n"
    assert "ended" in late
    refused = await anyio.to_thread.run_sync(cli, server_command, "send", task["task_id"], "later")
    assert refused.returncode == 1 and "ended" in refused.stderr


async def test_closing_the_input_from_its_own_server_ends_cat(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", stdin=True, keep_running=True)
        await call(client, "send_task_input", task_id=task["task_id"], text="only", close=True)
        ended = await finished(client, task["task_id"])
        again = await call_error(client, "send_task_input", task_id=task["task_id"], text="more")
    assert (ended["state"], ended["output"]) == ("completed", "only\n")
    assert "ended" in again


async def test_input_sent_just_before_the_server_dies_reaches_the_task(server_command: str) -> None:
    # Regression: the runner opened the input home only once it ran; a server that died before
    # that took what it had written with it.
    with RawServer(server_command) as crashed:
        crashed.initialize()
        arguments = {"command": "cat", "stdin": True, "keep_running": True}
        answer = crashed.request("tools/call", {"name": "run_background_task", "arguments": arguments})
        task_id = answer["result"]["structuredContent"]["task_id"]
        sent = {"task_id": task_id, "text": "written early"}
        crashed.request("tools/call", {"name": "send_task_input", "arguments": sent})
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(10)
    async with connect(server_command) as client:
        echoed = await call(
            client, "wait_for_task", task_id=task_id, output_pattern="early", since=0, timeout_seconds=10
        )
        await call(client, "end_background_task", task_id=task_id, grace_seconds=0)
    assert echoed["matched_line"] == "written early"


async def test_the_cli_closes_the_input_of_a_task_whose_server_is_running(server_command: str) -> None:
    # Regression: the server that started the task held its own end of the input home, so the
    # CLI's close (the runner's end) did not reach the task, and the CLI said it had.
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", stdin=True, keep_running=True)
        closed = await anyio.to_thread.run_sync(cli, server_command, "send", "--close", task["task_id"], "bye")
        ended = await finished(client, task["task_id"])
    assert (closed.returncode, closed.stderr) == (0, "") and "closed" in closed.stdout
    assert (ended["state"], ended["exit_code"], ended["output"]) == ("completed", 0, "bye\n")


@pytest.mark.parametrize("started", [{"stdin": True}, {"pty": True}])
async def test_the_cli_says_in_one_line_when_it_cannot_give_a_task_input(
    server_command: str, started: dict[str, bool]
) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", **started)
        refused = await anyio.to_thread.run_sync(cli, server_command, "send", "--close", task["task_id"], "bye")
        status = await call(client, "get_task_status", task_id=task["task_id"])
        await call(client, "end_background_task", task_id=task["task_id"])
    assert (refused.returncode, refused.stdout, refused.stderr.count("\n")) == (1, "", 1)
    assert "belongs to another server" in refused.stderr
    assert status["state"] == "running"


NEVER_REAPS = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: a dead server's tasks come here
subprocess.Popen(sys.argv[1:]).wait()  # the server alone is reaped; its tasks stay zombies
time.sleep(120)
"""
"""A parent that makes itself the subreaper of the server and never reaps the orphans it gets (a
container's process 1 without an init does this)."""


async def test_a_dead_servers_task_that_ended_unreaped_is_not_said_running(server_command: str, tmp_path: Path) -> None:
    """An ended task of a dead server that nobody reaped (a zombie) was reported `running` by the
    next server and the CLI, and ending it recorded `killed` (a new-user trial)."""
    wrapper = tmp_path / "never_reaps.py"
    wrapper.write_text(NEVER_REAPS)
    async with connect(sys.executable, args=[str(wrapper), server_command]) as first:  # the wrapper lives as long
        task = await call(first, "run_background_task", command="sleep 1; exit 3")
        parent = psutil.Process(psutil.Process(task["pid"]).ppid()).ppid()
        await kill_server_of(task["pid"])
        try:
            with anyio.fail_after(10):
                while psutil.Process(task["pid"]).status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.02)
            shown = cli(server_command, "status", task["task_id"])
            async with connect(server_command) as client:
                status = await call(client, "get_task_status", task_id=task["task_id"], lines=0)
        finally:
            psutil.Process(parent).kill()
    assert "state: failed" in shown.stdout.splitlines(), shown.stdout
    assert status["state"] == "failed", status
