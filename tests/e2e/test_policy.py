"""The policy (config.toml and flags) refuses what it forbids with an answer naming the rule."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_backgroundr.core.policy import CONFIG_FILE

from .harness import alive, call, call_error, connect, finished, held_by_the_v1_freezer, needs_the_v1_freezer, until

pytestmark = pytest.mark.anyio


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_text(text)


async def test_a_denied_command_is_refused_naming_the_rule(server_command: str, home: Path) -> None:
    write_config(home, r"deny_commands = ['^sudo\b', 'forbidden\s+word']" + "\n")
    async with connect(server_command) as client:
        message = await call_error(client, "run_background_task", command="echo forbidden   word")
        assert r"refused by policy rule deny_commands 'forbidden\s+word': the command matches it" in message
        assert r"deny_commands '^sudo\b'" in await call_error(client, "run_background_task", command="sudo -n true")
        assert (await call(client, "list_tasks"))["tasks"] == []
        started = await call(client, "run_background_task", command="echo sudo is only a word here")
        assert (await finished(client, started["task_id"]))["state"] == "completed"


async def test_a_deny_rule_that_would_backtrack_costs_no_client_anything(server_command: str, home: Path) -> None:
    # With Python's re this rule took 1.3 s on a 30-character command, 19 s on 34 and 102 s on
    # 36, holding every client (a new-user trial); RE2 matches in time linear in the command.
    write_config(home, "deny_commands = ['^(\\S+\\s*)*sudo\\b']\n")
    command = "npm run build --" + "x" * 40
    async with connect(server_command) as client:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(call, client, "list_tasks")
                started = await call(client, "run_background_task", command=command)
        assert (await finished(client, started["task_id"]))["state"] in ("completed", "failed")
        assert "deny_commands" in await call_error(client, "run_background_task", command="env x sudo -n true")


async def test_a_cwd_outside_the_roots_is_refused_even_through_a_symlink(server_command: str, tmp_path: Path) -> None:
    root, outside = tmp_path / "projects", tmp_path / "elsewhere"
    (root / "app").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    async with connect(server_command, args=["serve", "--allowed-cwd", str(root)]) as client:
        started = await call(client, "run_background_task", command="pwd", cwd=str(root / "app"))
        assert (await finished(client, started["task_id"]))["output"].strip() == str(root / "app")
        for cwd in (outside, root / "escape", tmp_path):
            message = await call_error(client, "run_background_task", command="pwd", cwd=str(cwd))
            assert "policy rule allowed_cwd" in message and "give a cwd under one of those roots" in message
        # The server's own directory (the default cwd) is outside the root too.
        assert "allowed_cwd" in await call_error(client, "run_background_task", command="pwd")


async def test_max_tasks_refuses_one_more_until_one_ends(server_command: str) -> None:
    async with connect(server_command, args=["serve", "--max-tasks", "2"]) as client:
        first = await call(client, "run_background_task", command="sleep 300")
        await call(client, "run_background_task", command="sleep 300")
        message = await call_error(client, "run_background_task", command="sleep 300")
        assert "policy rule max_tasks (2)" in message and "2 tasks are running" in message
        await call(client, "end_background_task", task_id=first["task_id"])
        await call(client, "run_background_task", command="true")


async def test_max_tasks_holds_for_starts_that_arrive_together(server_command: str) -> None:
    """Each start counted the tasks already running, then awaited its spawn: five starts sent at once
    under max_tasks 3 all started (a new-user trial; clients do send tool calls in parallel)."""
    answers: list[bool] = []
    async with connect(server_command, args=["serve", "--max-tasks", "3"]) as client:

        async def start() -> None:
            result = await client.call_tool("run_background_task", {"command": "sleep 300"})
            answers.append(bool(result.is_error))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(start)
        running = await call(client, "list_tasks", state="running")
    assert sorted(answers) == [False, False, False, True, True]
    assert running["total"] == 3


async def test_a_task_over_its_maximum_runtime_is_ended_and_recorded(server_command: str, home: Path) -> None:
    write_config(home, "default_runtime_seconds = 1\nmax_runtime_seconds = 60\n")
    async with connect(server_command) as client:
        started = await call(client, "run_background_task", command="sleep 300")
        status = await finished(client, started["task_id"])
        assert status["state"] == "killed" and status["signal"] == "SIGTERM"
        assert status["end_reason"] == "max_runtime_seconds (1 s) reached"
        assert status["max_runtime_seconds"] == 1 and not alive([started["pid"]])
        message = await call_error(client, "run_background_task", command="true", max_runtime_seconds=61)
        assert "policy rule max_runtime_seconds (60)" in message and "ask for 60 seconds or less" in message
        short = await call(client, "run_background_task", command="sleep 300", max_runtime_seconds=0.5)
        assert (await finished(client, short["task_id"]))["end_reason"] == "max_runtime_seconds (0.5 s) reached"
    with anyio.fail_after(30):
        shown = await anyio.run_process([server_command, "status", started["task_id"]], env=dict(os.environ))
    assert "state: killed" in shown.stdout.decode()
    assert "end_reason: max_runtime_seconds (1 s) reached" in shown.stdout.decode()


async def test_processes_a_task_left_behind_are_ended_at_its_runtime_limit(server_command: str) -> None:
    async with connect(server_command, args=["serve", "--default-runtime-seconds", "3"]) as client:
        started = await call(client, "run_background_task", command="sleep 300 > /dev/null & echo $!")
        status = await finished(client, started["task_id"])
        left_behind = int(status["output"])
        assert status["state"] == "completed" and alive([left_behind])
        await until(lambda: has_end_reason(client, started["task_id"]))
        assert not alive([left_behind])
        final = await call(client, "get_task_status", task_id=started["task_id"])
    assert final["state"] == "completed"
    assert final["end_reason"] == "max_runtime_seconds (3 s) reached: ended the processes it left behind"


@needs_the_v1_freezer
async def test_a_process_left_behind_that_outlives_the_runtime_limits_end_is_said_to_survive(
    server_command: str,
) -> None:
    """max_runtime_seconds' end of what a finished task left behind recorded 'ended the processes it
    left behind' whatever the end found: here the process outlives its SIGKILL (held by the v1
    freezer, as a process in uninterruptible sleep is) and still runs when the reason is read."""
    async with connect(server_command) as client:  # the end takes the default grace (5 s) and kill wait (2 s)
        started = await call(
            client, "run_background_task", command="sleep 300 > /dev/null & echo $!", max_runtime_seconds=1
        )
        status = await finished(client, started["task_id"])
        left_behind = int(status["output"])
        with held_by_the_v1_freezer(left_behind, f"mcp-backgroundr-test-{started['task_id']}"):
            await until(lambda: has_end_reason(client, started["task_id"]), 30)
            final = await call(client, "get_task_status", task_id=started["task_id"])
            assert alive([left_behind]) == [left_behind]
    reason = final["end_reason"]
    assert "ended the processes it left behind" not in reason, reason
    assert reason.startswith("max_runtime_seconds (1 s) reached: 1 process it left behind outlived its end: "), reason
    assert f"pid {left_behind} (sleep 300)" in reason, reason
    assert final["lingering_pids"] == [left_behind], final


POLLERS = 3


STATUS_OF: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "get_task_status": ({"lines": 0}, lambda answer: answer),
    "wait_for_task": ({"timeout_seconds": 5}, lambda answer: answer["status"]),
}
"""How to ask each tool whose answer carries a task's status, and where the status is in it."""


@pytest.mark.parametrize("tool", list(STATUS_OF))
async def test_a_status_asked_while_the_runtime_limit_ends_what_a_task_left_behind_is_of_one_moment(
    server_command: str, tool: str
) -> None:
    """Statuses asked while max_runtime_seconds ended what a finished task left behind showed it gone
    (lingering_pids []) before the reason said it was ended: the processes were listed after the end,
    the record read before the reason was recorded. Waits too."""
    arguments, status_in = STATUS_OF[tool]
    async with connect(server_command) as client:
        started = await call(
            client, "run_background_task", command="sleep 300 > /dev/null & echo $!", max_runtime_seconds=2
        )
        task_id = started["task_id"]
        assert (await finished(client, task_id))["state"] == "completed"
        seen: list[tuple[str | None, list[int]]] = []

        async def poll() -> None:
            while not seen or seen[-1][0] is None:
                status = status_in(await call(client, tool, task_id=task_id, **arguments))
                seen.append((status["end_reason"], status["lingering_pids"]))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for _ in range(POLLERS):
                    group.start_soon(poll)
    mixed = [(reason, pids) for reason, pids in seen if (reason is None) != bool(pids)]
    assert mixed == [], f"{len(mixed)} of {len(seen)} statuses mixed two moments"


async def has_end_reason(client: Client, task_id: str) -> bool:
    return (await call(client, "get_task_status", task_id=task_id))["end_reason"] is not None


async def test_env_passthrough_narrows_what_tasks_inherit(server_command: str) -> None:
    async with connect(server_command, args=["serve", "--env-passthrough", "PATH"]) as client:
        started = await call(client, "run_background_task", command="env | sort", env={"GIVEN": "yes"})
        names = {line.split("=", 1)[0] for line in (await finished(client, started["task_id"]))["output"].split()}
    assert {"PATH", "MCP_BACKGROUNDR_TASK_ID", "GIVEN"} <= names
    assert "HOME" not in names and "MCP_BACKGROUNDR_HOME" not in names


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ("max_tasks = 0\n", "max_tasks=0 is invalid"),
        ("deny_commands = ['(']\n", "deny_commands[0]='(' is not a valid pattern in RE2 syntax"),
        ("deny_commands = ['x', 'sudo(?!-n)']\n", "deny_commands[1]='sudo(?!-n)' is not a valid pattern in RE2 syntax"),
        ("allowed_cwds = ['/tmp']\n", "unknown setting allowed_cwds"),
        ("max_tasks = \n", "is not valid TOML"),
        ("default_runtime_seconds = 10\nmax_runtime_seconds = 5\n", "is above max_runtime_seconds"),
    ],
)
def test_a_bad_config_stops_the_server_with_one_line(
    server_command: str, home: Path, config: str, complaint: str
) -> None:
    write_config(home, config)
    result = subprocess.run([server_command], input="", capture_output=True, text=True, timeout=30, env=os.environ)
    assert result.returncode == 1
    assert complaint in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
