"""End-to-end: tasks that outlive their server, and restart policies."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr.config import CGROUP_ENV

from .harness import alive, call, call_error, cgroup_directory, cli, connect, finished, until

pytestmark = pytest.mark.anyio


async def test_a_keep_running_task_survives_a_server_restart_with_the_same_pid(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command="echo up; sleep 300", keep_running=True, wait_for_pattern="up"
        )
        ordinary = await call(client, "run_background_task", command="sleep 300")
    assert alive([task["pid"]]) == [task["pid"]]
    assert alive([ordinary["pid"]]) == []
    async with connect(server_command) as client:
        listing = await call(client, "list_tasks")
        status = await call(client, "get_task_status", task_id=task["task_id"])
        ended = await call(client, "end_background_task", task_id=task["task_id"])
        after = await call(client, "get_task_status", task_id=task["task_id"])
    assert [t["task_id"] for t in listing["tasks"]] == [task["task_id"]]
    assert (status["state"], status["pid"], status["output"]) == ("running", task["pid"], "up\n")
    assert ended["survivors"] == []
    assert ended["state"] == "killed"
    assert (after["state"], after["end_reason"]) == ("killed", "end_background_task")
    assert alive([task["pid"]]) == []


async def test_the_next_servers_runtime_limit_holds_for_what_it_adopts(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300", keep_running=True)
    assert task["pid"] in alive([task["pid"]])
    async with connect(server_command, args=["serve", "--max-runtime-seconds", "1"]) as client:
        status = await finished(client, task["task_id"])
    assert (status["state"], status["end_reason"]) == ("killed", "max_runtime_seconds (1 s) reached")
    assert status["max_runtime_seconds"] == 1
    assert alive([task["pid"]]) == []


async def test_the_exit_of_a_keep_running_task_that_ended_between_servers_is_known(
    server_command: str, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    command = f"while [ ! -e {flag} ]; do sleep 0.05; done; exit 7"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, keep_running=True)
    runner = psutil.Process(task["pid"])
    flag.touch()
    with anyio.fail_after(10):
        while runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE:
            await anyio.sleep(0.02)
    async with connect(server_command) as client:
        status = await call(client, "get_task_status", task_id=task["task_id"])
    assert (status["state"], status["exit_code"]) == ("failed", 7)


async def test_on_failure_restarts_are_counted_and_each_run_is_marked_in_the_log(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command="echo attempt; exit 1", restart="on-failure", max_restarts=2
        )
        status = await finished(client, task["task_id"])
    assert (status["state"], status["exit_code"], status["restarts"]) == ("failed", 1, 2)
    lines = status["output"].splitlines()
    assert lines.count("attempt") == 3
    assert "run 2 (restart 1 of 2); the previous run ended with exit code 1" in lines[1]
    assert "run 3 (restart 2 of 2)" in lines[3]


async def test_ending_a_task_stops_its_restarting(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command="echo run; sleep 300", restart="always", wait_for_pattern="run"
        )
        ended = await call(client, "end_background_task", task_id=task["task_id"])
        status = await call(client, "get_task_status", task_id=task["task_id"])
    assert ended["state"] == "killed"
    assert ended["survivors"] == []
    assert (status["restarts"], status["next_start_at"], status["output"]) == (0, None, "run\n")


async def test_restarts_counts_the_runs_after_the_first_when_the_task_is_ended_while_it_waits_to_restart(
    server_command: str,
) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo run; exit 1", restart="always", max_restarts=100)
        status: dict[str, object] = {}

        async def waiting_to_restart() -> bool:
            nonlocal status
            status = await call(client, "get_task_status", task_id=task["task_id"], since=0)
            return status["next_start_at"] is not None and int(str(status["restarts"])) >= 2

        await until(waiting_to_restart)
        await call(client, "end_background_task", task_id=task["task_id"])
        ended = await call(client, "get_task_status", task_id=task["task_id"], since=0)
    assert status["restarts"] == str(status["output"]).count("run\n") - 1, status
    assert ended["state"] == "killed" and ended["next_start_at"] is None
    assert ended["restarts"] == ended["output"].count("run\n") - 1, ended


async def test_bad_restart_arguments(server_command: str) -> None:
    async with connect(server_command) as client:
        bad: list[tuple[dict[str, object], str]] = [
            ({"restart": "sometimes"}, "restart"),
            ({"restart": "always", "max_restarts": -1}, "max_restarts"),
            ({"max_restarts": 3}, "max_restarts"),
            ({"keep_running": True, "pty": True}, "keep_running"),
        ]
        for arguments, field in bad:
            result = await client.call_tool("run_background_task", {"command": "true", **arguments})
            assert result.is_error
            assert field in str(result.content[0])


async def test_an_adopted_task_that_ended_by_itself_as_an_end_was_asked_keeps_its_runners_account(
    server_command: str, tmp_path: Path
) -> None:
    """The end is asked just after the run ended and its runner recorded it, before the server
    heard the runner exit: the runner's account (completed, exit code 0) is what stands, as for a
    remote task; ``killed`` only when the end reached the run. Several tries: every time."""
    tries = []
    for index in range(4):
        gate = tmp_path / f"gate{index}"
        command = f"while [ ! -e {gate} ]; do sleep 0.01; done"
        async with connect(server_command) as client:
            tries.append((gate, await call(client, "run_background_task", command=command, keep_running=True)))
    async with connect(server_command) as client:
        for gate, task in tries:
            run_record = Path(task["log_path"].removesuffix(".log") + ".status")
            gate.touch()
            with anyio.fail_after(10):
                while '"state": "running"' in run_record.read_text():
                    await anyio.sleep(0.001)
            ended = await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
            recorded = json.loads(run_record.read_text())
            assert (ended["state"], ended["exit_code"]) == (recorded["state"], recorded["exit_code"]), recorded
            status = await call(client, "get_task_status", task_id=task["task_id"])
            if recorded["state"] == "completed":
                assert status["end_reason"] != "end_background_task", status


def _task_cgroups(directory: Path) -> list[str]:
    return sorted(group.name for group in directory.iterdir() if group.name.startswith("task-"))


async def _end_with_a_line_from_the_cli(server_command: str, task: dict[str, object]) -> None:
    """End a ``head -n 1`` task by giving it its line from the command line; wait for its runner to exit."""
    sent = await anyio.to_thread.run_sync(cli, server_command, "send", str(task["task_id"]), "the line")
    assert sent.returncode == 0, sent.stderr

    async def runner_gone() -> bool:  # reaped too: a zombie still counts as the task running
        return not psutil.pid_exists(int(str(task["pid"])))

    await until(runner_gone)


@pytest.mark.linux_backend("task cgroups")
@pytest.mark.parametrize("learner", ["the next server", "a listing", "the cli"])
async def test_the_empty_cgroup_of_a_task_that_ended_while_no_server_watched_is_removed(
    server_command: str, learner: str
) -> None:
    # Regression: only a get_task_status of the task removed it; starts, listings and the CLI left it.
    with cgroup_directory(f"backgroundr-unwatched-{os.getpid()}") as directory:
        env = {CGROUP_ENV: str(directory)}
        async with contextlib.AsyncExitStack() as stack:
            watcher = (
                await stack.enter_async_context(connect(server_command, env=env)) if learner == "a listing" else None
            )
            async with connect(server_command, env=env) as client:
                task = await call(client, "run_background_task", command="head -n 1", stdin=True, keep_running=True)
            before = _task_cgroups(directory)
            await _end_with_a_line_from_the_cli(server_command, task)
            if watcher is not None:
                listing = await call(watcher, "list_tasks", all=True)
                assert [t["state"] for t in listing["tasks"]] == ["completed"]
        if learner == "the next server":
            async with connect(server_command, env=env):
                after = _task_cgroups(directory)
        elif learner == "the cli":
            shown = await anyio.to_thread.run_sync(cli, server_command, "ps", "--all")
            assert "completed(0)" in shown.stdout
        after = _task_cgroups(directory)
    assert before == [f"task-{task['task_id']}"]
    assert after == []


@pytest.mark.linux_backend("task cgroups")
async def test_the_cgroup_of_an_adopted_task_is_removed_when_it_ends(server_command: str) -> None:
    with cgroup_directory(f"backgroundr-adopted-{os.getpid()}") as directory:
        env = {CGROUP_ENV: str(directory)}
        async with connect(server_command, env=env) as client:
            task = await call(client, "run_background_task", command="head -n 1", stdin=True, keep_running=True)
        async with connect(server_command, env=env) as client:
            adopted = await call(client, "list_tasks")
            await _end_with_a_line_from_the_cli(server_command, task)

            async def removed() -> bool:
                return _task_cgroups(directory) == []

            await until(removed)
    assert [t["task_id"] for t in adopted["tasks"]] == [task["task_id"]]


@pytest.mark.parametrize("signal_to_own_group", ["kill 0", "kill -9 0"])
async def test_a_command_that_signals_its_own_process_group_is_restarted_by_its_policy(
    server_command: str, signal_to_own_group: str
) -> None:
    """``trap 'kill 0' EXIT`` is how a script ends the jobs it started: it signals the script's
    process group. The runner that restarts the command must not be in it."""
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=f"echo run; sleep 300 & {signal_to_own_group}",
            restart="on-failure",
            max_restarts=2,
        )
        status = await finished(client, task["task_id"])
        ended = await call(client, "end_background_task", task_id=task["task_id"])
    signum = 9 if "-9" in signal_to_own_group else 15
    assert (status["exit_code"], status["restarts"]) == (128 + signum, 2)
    assert status["output"].splitlines().count("run") == 3
    assert ended["survivors"] == []


async def test_each_run_of_a_restarted_terminal_task_has_the_terminal(server_command: str) -> None:
    """The command runs in a process group of its own; on a terminal it is made the foreground
    group at each run, so it reads its input (a background group reading is stopped) and gets
    Ctrl-C."""
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command="echo ready; read line; echo got $line; exit 3",
            pty=True,
            restart="on-failure",
            max_restarts=1,
            wait_for_pattern="ready",
        )
        await call(client, "send_task_input", task_id=task["task_id"], text="one")
        await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="run 2", timeout_seconds=10)
        await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="ready", timeout_seconds=10)
        await call(client, "send_task_input", task_id=task["task_id"], text="\u0003", newline=False)
        status = await finished(client, task["task_id"])
    assert "got one" in status["output"]
    assert (status["restarts"], status["exit_code"], status["signal"]) == (1, 130, "SIGINT")


@pytest.mark.anyio
async def test_keep_running_with_pty_is_refused_and_the_parameter_and_readme_say_so(server_command: str) -> None:
    """keep_running with pty is refused, but neither the parameter's description nor the README said
    so (a new-user trial): both now say it, with the reason the refusal gives."""
    async with connect(server_command) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        described = tools["run_background_task"].input_schema["properties"]["keep_running"]["description"]
        refusal = await call_error(client, "run_background_task", command="cat", pty=True, keep_running=True)
    assert "Refused with pty" in described and "hangs up when it exits" in described, described
    assert refusal.startswith("keep_running=true is invalid: a pty task cannot outlive the server"), refusal
    assert "terminal hangs up" in refusal and "stdin=true" in refusal, refusal
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "`keep_running=true` with `pty=true` is refused: the server holds a pty task's terminal" in readme
