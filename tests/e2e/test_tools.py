"""End-to-end: the tools, driven through the SDK's stdio client against the installed server."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client

from .harness import alive, call, call_error, connect, finished, text_of, until

pytestmark = pytest.mark.anyio


async def test_output_exit_code_and_shell_features(server_command: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    async with connect(server_command) as client:
        started = await call(
            client,
            "run_background_task",
            command='echo out; echo err >&2; echo "$GREETING" | tr a-z A-Z && cd sub && pwd; exit 3',
            cwd=str(tmp_path),
            env={"GREETING": "hello"},
            name="demo",
        )
        assert started["state"] == "running" and started["cwd"] == str(tmp_path)
        status = await finished(client, started["task_id"])
    assert status["state"] == "failed" and status["exit_code"] == 3 and status["signal"] is None
    assert status["output"] == f"out\nerr\nHELLO\n{tmp_path}/sub\n"
    assert status["name"] == "demo" and status["ended_at"] is not None
    assert Path(started["log_path"]).read_bytes() == status["output"].encode()


@pytest.mark.parametrize(
    ("command", "state", "exit_code", "signal"),
    [("exit 0", "completed", 0, None), ("exit 3", "failed", 3, None), ("kill -KILL $$", "failed", 137, "SIGKILL")],
)
async def test_exit_codes(server_command: str, command: str, state: str, exit_code: int, signal: str | None) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command)
        status = await finished(client, task["task_id"])
    assert (status["state"], status["exit_code"], status["signal"]) == (state, exit_code, signal)
    assert status["kill_requested"] is False


async def test_child_environment_stdin_and_descriptors(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command='echo "unbuffered=$PYTHONUNBUFFERED"; readlink /proc/self/fd/0; ls /proc/self/fd | wc -l',
        )
        status = await finished(client, task["task_id"])
    unbuffered, stdin, descriptors = status["output"].splitlines()
    assert unbuffered == "unbuffered=1"
    assert stdin == "/dev/null"
    assert int(descriptors) <= 4  # 0, 1, 2 and the one ls opened to list them


def _task_pids(task_id: str) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["environ"], ad_value=None)
        if (p.info.get("environ") or {}).get("MCP_BACKGROUNDR_TASK_ID") == task_id
    ]


def _blocks_sigterm(pid: int) -> bool:
    """Whether the process holds SIGTERM blocked right now (a gone one does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    blocked = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(blocked >> (signal.SIGTERM - 1) & 1)


async def _started_with_children(client: Client, command: str, count: int) -> tuple[str, list[int]]:
    """Start ``command``; once it runs ``count`` processes, none of them blocking SIGTERM, its task id
    and their pids. The shell blocks every signal around each vfork until it runs again after its
    child's exec (dash does): a SIGTERM sent then waits, blocked, and an end with a grace of 0 rightly
    finds that SIGKILL was needed (and the shell dies of it)."""
    task = await call(client, "run_background_task", command=command)
    pids: list[int] = []

    async def settled() -> bool:
        nonlocal pids
        pids = _task_pids(task["task_id"])
        return len(pids) >= count and not any(_blocks_sigterm(pid) for pid in pids)

    await until(settled)
    return task["task_id"], pids


RACED_EXITS = 25
"""Tasks whose exit a tight loop of status calls races (most of them land inside a call)."""


async def test_a_status_that_reports_an_exit_has_the_final_output_and_no_dead_process(server_command: str) -> None:
    """Regression: a status call during which its task exited answered with the exit and the output and
    processes read while the task still ran: its last line missing, its own dead shell listed as lingering."""
    async with connect(server_command) as client:
        for _ in range(RACED_EXITS):
            started = await call(client, "run_background_task", command="sleep 0.05; echo last-line")
            task_id = started["task_id"]
            with anyio.fail_after(10):
                while (status := await call(client, "get_task_status", task_id=task_id))["state"] == "running":
                    pass
            assert "last-line" in status["output"], status
            assert started["pid"] not in status["lingering_pids"], status


async def test_ending_a_tree_leaves_no_survivors(server_command: str) -> None:
    async with connect(server_command) as client:
        task_id, pids = await _started_with_children(client, "sleep 300 & sleep 300", 3)
        ended = await call(client, "end_background_task", task_id=task_id)
        assert alive(pids) == []
        status = await call(client, "get_task_status", task_id=task_id)
    assert ended["state"] == "killed" and ended["survivors"] == [] and not ended["escalated"]
    assert ended["signal"] == "SIGTERM" and ended["exit_code"] == 143
    assert set(pids) <= set(ended["signalled_pids"])
    assert status["state"] == "killed" and status["kill_requested"] is True


WIDE_TREE = 150
"""Background children of one shell: processes that die of SIGTERM while the rest are still being signalled."""


async def test_every_process_sent_sigterm_is_listed_in_signalled_pids(server_command: str) -> None:
    """Regression: a process that died of its SIGTERM and was reaped (its parent, the task's shell, was
    ours) before it got the SIGCONT that follows was left out of signalled_pids."""
    async with connect(server_command) as client:
        command = f"for i in $(seq {WIDE_TREE}); do sleep 300 & done; wait"
        task_id, pids = await _started_with_children(client, command, WIDE_TREE + 1)
        ended = await call(client, "end_background_task", task_id=task_id)
        assert alive(pids) == []
    assert ended["survivors"] == [] and not ended["escalated"]
    assert set(pids) <= set(ended["signalled_pids"]), set(pids) - set(ended["signalled_pids"])


async def test_a_task_that_ignores_sigterm_is_killed_by_escalation(server_command: str) -> None:
    async with connect(server_command) as client:
        task_id, pids = await _started_with_children(client, "trap '' TERM; sleep 300 & sleep 300; wait", 3)
        ended = await call(client, "end_background_task", task_id=task_id, grace_seconds=0.3)
        assert alive(pids) == []
    assert ended["escalated"] is True and ended["survivors"] == []
    assert ended["state"] == "killed" and ended["signal"] == "SIGKILL"


@pytest.mark.parametrize(
    ("command", "count", "escalated", "signal"),
    [
        ("sleep 300", 1, False, "SIGTERM"),
        ("sleep 300 & sleep 300; wait", 3, False, "SIGTERM"),
        ("(trap '' TERM; sleep 300) & sleep 300; wait", 3, True, "SIGTERM"),
        ("trap '' TERM; sleep 300 & sleep 300; wait", 3, True, "SIGKILL"),
    ],
    ids=["it-dies-of-sigterm", "all-die-of-sigterm", "a-child-ignores-it", "all-ignore-it"],
)
async def test_a_grace_of_0_says_sigkill_was_needed_only_when_a_process_outlived_sigterm(
    server_command: str, command: str, count: int, escalated: bool, signal: str
) -> None:
    async with connect(server_command) as client:
        task_id, pids = await _started_with_children(client, command, count)
        result = await client.call_tool("end_background_task", {"task_id": task_id, "grace_seconds": 0})
        assert alive(pids) == []
    ended, text = result.structured_content, text_of(result)
    assert ended is not None and (ended["escalated"], ended["signal"]) == (escalated, signal), text
    assert ("SIGKILL was needed" in text) is escalated, text


async def test_daemonized_processes_are_lingering_and_ended(server_command: str) -> None:
    command = "setsid sleep 300 & nohup sh -c 'sleep 301 & sleep 302' >/dev/null 2>&1 & echo started"
    async with connect(server_command) as client:
        task_id, _ = await _started_with_children(client, command, 1)
        status = await finished(client, task_id)
        lingering: list[int] = []

        async def all_lingering() -> bool:
            nonlocal lingering
            lingering = (await call(client, "get_task_status", task_id=task_id))["lingering_pids"]
            return len(lingering) >= 4

        await until(all_lingering)
        ended = await call(client, "end_background_task", task_id=task_id)
        assert alive(lingering) == []
        after = await call(client, "get_task_status", task_id=task_id)
    assert status["state"] == "completed" and status["output"] == "started\n"
    assert set(lingering) <= set(ended["signalled_pids"]) and ended["survivors"] == []
    assert ended["state"] == "completed"
    assert after["lingering_pids"] == []


async def test_ending_a_finished_task_answers_its_state(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="exit 5")
        await finished(client, task["task_id"])
        ended = await call(client, "end_background_task", task_id=task["task_id"])
    assert (ended["state"], ended["exit_code"], ended["signalled_pids"]) == ("failed", 5, [])


async def test_list_tasks_newest_first_with_state_filter(server_command: str) -> None:
    async with connect(server_command) as client:
        first = await call(client, "run_background_task", command="true", name="first")
        await finished(client, first["task_id"])
        second = await call(client, "run_background_task", command="sleep 300", name="second")
        listing = await call(client, "list_tasks")
        running = await call(client, "list_tasks", state="running")
        text = text_of(await client.call_tool("list_tasks", {}))
        newest = await call(client, "list_tasks", limit=1)
        newest_text = text_of(await client.call_tool("list_tasks", {"limit": 1}))
        too_many = await call_error(client, "list_tasks", limit=1001)
        long_command = await call(client, "run_background_task", command="true " + "x" * 5000)
        shown = (await call(client, "list_tasks", limit=1))["tasks"][0]
    assert [t["task_id"] for t in listing["tasks"]] == [second["task_id"], first["task_id"]]
    assert listing["total"] == 2 and running["total"] == 1
    assert [t["task_id"] for t in running["tasks"]] == [second["task_id"]]
    assert second["task_id"] in text and "sleep 300" in text
    assert [t["task_id"] for t in newest["tasks"]] == [second["task_id"]] and newest["total"] == 2
    assert "1 older not listed" in newest_text
    assert "limit" in too_many
    assert shown["task_id"] == long_command["task_id"]
    kept, note = shown["command"].split(" [cut: ", 1)
    assert len(kept) == 200 and kept.endswith("...")
    assert note == f"5005 characters in all; read the resource task://{shown['task_id']}/command for the whole command]"


async def test_the_registry_records_pid_and_start_time(server_command: str, home: Path) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        expected_start = psutil.Process(task["pid"]).create_time()
    with sqlite3.connect(home / "registry.sqlite3") as db:
        row = db.execute(
            "SELECT pid, pid_create_time, state, end_reason FROM tasks WHERE task_id = ?", (task["task_id"],)
        ).fetchone()
    assert row == (task["pid"], expected_start, "killed", "server shutdown")
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "registry.sqlite3").stat().st_mode & 0o777 == 0o600
    assert Path(task["log_path"]).stat().st_mode & 0o777 == 0o600
    assert os.path.dirname(task["log_path"]) == str(home / "logs")


async def test_of_two_removes_sent_together_one_removes_and_one_is_told_so(server_command: str) -> None:
    """Both answered "removed", the second "freeing 0 bytes" of a task the first had removed."""
    answers = []
    async with connect(server_command) as client:
        done = await call(client, "run_background_task", command="echo bye")
        await finished(client, done["task_id"])

        async def remove() -> None:
            answers.append(await client.call_tool("remove_task", {"task_id": done["task_id"]}))

        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(remove)
    assert sorted(answer.is_error for answer in answers) == [False, True], [text_of(a) for a in answers]
    refused = next(text_of(answer) for answer in answers if answer.is_error)
    assert done["task_id"] in refused and "\n" not in refused, refused


async def test_remove_forgets_a_finished_task_and_refuses_a_running_one(server_command: str, home: Path) -> None:
    async with connect(server_command) as client:
        done = await call(client, "run_background_task", command="echo bye")
        await finished(client, done["task_id"])
        running = await call(client, "run_background_task", command="sleep 300")
        refused = await client.call_tool("remove_task", {"task_id": running["task_id"]})
        on_disk = os.stat(done["log_path"]).st_blocks * 512
        removed = await call(client, "remove_task", task_id=done["task_id"])
        listing = await call(client, "list_tasks")
        gone = await client.call_tool("get_task_status", {"task_id": done["task_id"]})
    assert refused.is_error
    assert "end_background_task" in text_of(refused)
    assert removed == {"task_id": done["task_id"], "freed_bytes": on_disk}  # its blocks, not the 4 bytes
    assert not Path(done["log_path"]).exists()
    assert [t["task_id"] for t in listing["tasks"]] == [running["task_id"]]
    assert gone.is_error
    with sqlite3.connect(home / "registry.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM tasks WHERE task_id = ?", (done["task_id"],)).fetchone() == (0,)
