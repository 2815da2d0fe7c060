"""End-to-end: what a new user met on first use, each fixed where the user saw it.

Answers and tables a model or a person reads must say true things and point somewhere useful.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_backgroundr.core.policy import CONFIG_FILE

from .harness import call, call_error, connect, finished, on_a_terminal, text_of

pytestmark = pytest.mark.anyio


async def _call_with_text(client: Client, tool: str, **arguments: Any) -> tuple[dict[str, Any], str]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content, text_of(result)


async def test_a_wait_too_long_to_show_says_how_to_read_it_not_to_ask_for_fewer_lines(server_command: str) -> None:
    async with connect(server_command) as client:
        started, text = await _call_with_text(
            client, "run_background_task", command="seq 1 20000", wait_for_pattern="^20000$"
        )
        waited, _ = await _call_with_text(
            client, "wait_for_task", task_id=started["task_id"], since=0, timeout_seconds=10
        )
    for truncation in (started["wait"]["status"]["truncation"], waited["status"]["truncation"]):
        assert "requested lines" not in truncation and "fewer lines" not in truncation, truncation
        assert "what was written after cursor 0 does not fit" in truncation
        assert "since=0" in truncation
    assert started["wait"]["status"]["truncation"] in text


async def test_a_wait_that_sees_a_silent_exit_points_at_the_output_written_before(server_command: str) -> None:
    async with connect(server_command) as client:
        started = await call(client, "run_background_task", command=["no-such-program-anywhere"])
        ended = await finished(client, started["task_id"])
        waited, text = await _call_with_text(client, "wait_for_task", task_id=started["task_id"])
    assert waited["reason"] == "exited" and waited["status"]["output"] == ""
    assert f"but {ended['output_bytes']} bytes before it" in waited["advice"]
    assert "get_task_status" in waited["advice"] and waited["advice"] in text


async def test_a_wait_that_saw_output_gives_no_such_advice(server_command: str) -> None:
    async with connect(server_command) as client:
        started = await call(client, "run_background_task", command="echo hello")
        await finished(client, started["task_id"])
        waited = await call(client, "wait_for_task", task_id=started["task_id"], since=0)
    assert waited["status"]["output"] == "hello\n" and waited["advice"] is None


async def test_a_multi_line_command_keeps_to_one_row_in_ps_and_list_tasks(server_command: str) -> None:
    script = "echo ready\nsleep 300"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=script, wait_for_pattern="ready")
        listed = await client.call_tool("list_tasks", {})
        table = await anyio.to_thread.run_sync(
            lambda: subprocess.run([server_command, "ps"], capture_output=True, text=True, timeout=30, check=True)
        )
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    head, *rows = text_of(listed).splitlines()
    assert head.startswith("1 of 1 tasks") and len(rows) == 1, text_of(listed)
    assert "echo ready\\nsleep 300" in text_of(listed)
    table_rows = table.stdout.splitlines()
    assert len(table_rows) == 2 and "echo ready\\nsleep 300" in table_rows[1], table.stdout


def test_the_terminal_hint_names_the_server_by_an_absolute_path(server_command: str) -> None:
    """Started as ``.venv/bin/mcp-backgroundr`` (the README's command), the hint must not pass
    on that relative path: a client starts the server from a directory of its own."""
    directory = Path(server_command).parent
    hint, _, _ = on_a_terminal([f"./{Path(server_command).name}"], cwd=directory)
    assert f"claude mcp add backgroundr -- {directory.resolve() / Path(server_command).name} " in hint, hint


async def test_limits_are_shown_as_written_not_in_exponent_notation(server_command: str, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_text("max_memory_bytes = 2147483648\nmax_runtime_seconds = 2000000\n")
    shown = await anyio.to_thread.run_sync(
        lambda: subprocess.run([server_command, "policy"], capture_output=True, text=True, timeout=30, check=True)
    )
    async with connect(server_command) as client:
        refusal = await call_error(client, "run_background_task", command="true", max_runtime_seconds=3000000)
    assert "max_memory_bytes: 2147483648" in shown.stdout and "max_runtime_seconds: 2000000" in shown.stdout
    assert "max_runtime_seconds=3000000 asks for more; ask for 2000000 seconds or less" in refusal, refusal


def test_a_bad_prune_age_is_called_days_not_seconds(server_command: str) -> None:
    result = subprocess.run(
        [server_command, "prune", "--days", "-1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "'-1' is not a number of days from 0 to 36500" in result.stderr, result.stderr


async def test_an_empty_listing_says_where_else_tasks_may_be(server_command: str) -> None:
    async with connect(server_command) as client:
        earlier = await call(client, "run_background_task", command="true")
        await finished(client, earlier["task_id"])
    async with connect(server_command) as client:
        own = text_of(await client.call_tool("list_tasks", {}))
        running = text_of(await client.call_tool("list_tasks", {"all": True, "state": "running"}))
        everyone = await call(client, "list_tasks", all=True)
    assert own == "no tasks on this server; all=true also lists other servers' and earlier sessions' tasks"
    assert running == "no running tasks in the registry; run_background_task starts one"
    assert [task["task_id"] for task in everyone["tasks"]] == [earlier["task_id"]]


SETTING_ERROR = re.compile(r'^mcp-backgroundr: (MCP_BACKGROUNDR_\w+)="(.*)" is invalid: (.*)$')
PLAIN_RANGE = re.compile(r"^give (a|a whole) number from [0-9.]+ to [0-9.]+, or unset it$")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MCP_BACKGROUNDR_MAX_LOG_BYTES", "-1"),
        ("MCP_BACKGROUNDR_MAX_LOG_BYTES", "nan"),
        ("MCP_BACKGROUNDR_MAX_LOG_BYTES", "1e15"),
        ("MCP_BACKGROUNDR_KEEP_DAYS", "-1"),
        ("MCP_BACKGROUNDR_OUTPUT_BUDGET", "inf"),
        ("MCP_BACKGROUNDR_OUTPUT_BUDGET", "1e9"),
        ("MCP_BACKGROUNDR_OUTPUT_BUDGET", "lots"),
        ("MCP_BACKGROUNDR_KEEP_FINISHED", "2000000"),
        ("MCP_BACKGROUNDR_KEEP_FINISHED", "1.5"),
        ("MCP_BACKGROUNDR_TASK_NICENESS", "20"),
        ("MCP_BACKGROUNDR_UNATTENDED_WAIT_SECONDS", "nan"),
    ],
)
@pytest.mark.parametrize("command", [[], ["ps"]], ids=["serve", "ps"])
def test_a_setting_out_of_its_range_stops_with_one_line(
    server_command: str, name: str, value: str, command: list[str]
) -> None:
    """Out of range, a setting was clamped in silence (KEEP_DAYS=-1: a start deleted every finished
    task; MAX_LOG_BYTES=-1: every log capped at 64 KiB; KEEP_FINISHED=1.5 kept 1) or crashed with a
    traceback (nan); its line lacked the program's name and gave its range as "256 to 1.04858e+06"
    (a new-user trial)."""
    environment = {**os.environ, name: value}
    result = subprocess.run(
        [server_command, *command], input="", capture_output=True, text=True, timeout=30, env=environment, check=False
    )
    assert result.returncode == 1
    said = SETTING_ERROR.match(result.stderr.strip())
    assert said is not None and said.groups()[:2] == (name, value), result.stderr
    assert PLAIN_RANGE.match(said.group(3)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        (
            "max_runtime_seconds = 1e12\n",
            "max_runtime_seconds=1000000000000 is invalid: use seconds above 0, at most 315360000",
        ),
        ("default_runtime_seconds = -1.0\n", "default_runtime_seconds=-1 is invalid"),
        (
            "max_memory_bytes = 2000000000000000000000\n",
            "max_memory_bytes=2000000000000000000000 is invalid: use 1048576 to 1152921504606846976",
        ),
        ("max_processes = 99999999\n", "max_processes=99999999 is invalid: use 1 to 4194304"),
        ("max_tasks = 1.5\n", "max_tasks=1.5 is invalid: use a whole number of at least 1"),
        ("env_passthrough = 5\n", "env_passthrough=5 is invalid: use a list of strings"),
        ("allowed_hosts = [1]\n", "allowed_hosts=[1] is invalid: use a list of strings"),
        ("allowed_cwd = ['here']\n", "allowed_cwd entry 'here' is invalid: use an absolute path"),
    ],
)
def test_every_config_setting_out_of_its_range_stops_with_one_line_of_plain_numbers(
    server_command: str, home: Path, config: str, complaint: str
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_text(config)
    for command in ([], ["policy"]):
        result = subprocess.run(
            [server_command, *command], input="", capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 1
        assert result.stderr.startswith(f"mcp-backgroundr: policy setting {complaint}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_large_whole_setting_is_shown_with_every_digit(server_command: str, home: Path) -> None:
    """max_memory_bytes = 9007199254740993 was shown as 9007199254740992 (through a float)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_text("max_memory_bytes = 9007199254740993\n")
    shown = subprocess.run([server_command, "policy"], capture_output=True, text=True, timeout=30, check=True)
    assert shown.stdout.strip() == "max_memory_bytes: 9007199254740993", shown.stdout


def test_a_config_that_is_not_text_stops_with_one_line(server_command: str, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_bytes(b"\xff garbage\n")
    for command in ([], ["policy"]):
        result = subprocess.run(
            [server_command, *command], input="", capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 1
        assert "is not UTF-8 text" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.linux_backend("the portable backend makes no cgroups")
def test_a_cgroup_directory_that_cannot_be_used_stops_the_server_with_one_line(
    server_command: str, tmp_path: Path
) -> None:
    """MCP_BACKGROUNDR_CGROUP naming a directory the server cannot use was dropped in silence: tasks
    ran at the subreaper level, without the limits it was set for."""
    environment = {**os.environ, "MCP_BACKGROUNDR_CGROUP": str(tmp_path / "no-such-cgroup")}
    result = subprocess.run(
        [server_command], input="", capture_output=True, text=True, timeout=30, env=environment, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f'mcp-backgroundr: MCP_BACKGROUNDR_CGROUP="{tmp_path}/no-such-cgroup" is invalid:')
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
