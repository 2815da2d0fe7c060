"""End-to-end: what a remote task's answers say is what its host did, as for a local task (exit
codes and signals, bytes freed, containment level), and its files there are the user's own."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from .harness import call, connect, kill_server_of
from .sshd import Sshd
from .test_remote import ALLOW

pytestmark = pytest.mark.anyio

SIGNAL_ENDS = {
    "kills itself": "echo up; kill -KILL $$",
    "is ended past its grace": "trap '' TERM; echo up; sleep 300",
}
"""Tasks whose runs end by a signal: by their own hand, and by an end that had to SIGKILL them."""


async def _ended_by_a_signal(client: Any, command: str, **where: Any) -> tuple[object, ...]:
    started = await call(client, "run_background_task", command=command, wait_for_pattern="up", **where)
    task_id = started["task_id"]
    if "trap" in command:
        ended = await call(client, "end_background_task", task_id=task_id, grace_seconds=0.5)
        assert ended["escalated"]
        answered = (ended["state"], ended["exit_code"], ended["signal"])
    else:
        answered = None
    done = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20)
    status = done["status"]
    shown = (status["state"], status["exit_code"], status["signal"])
    assert answered in (None, shown), (answered, shown)
    return shown


@pytest.mark.parametrize("how", SIGNAL_ENDS)
async def test_a_remote_run_ended_by_a_signal_reports_its_code_and_name_as_a_local_one(
    server_command: str, ssh_env: dict[str, str], how: str
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        here = await _ended_by_a_signal(client, SIGNAL_ENDS[how])
        there = await _ended_by_a_signal(client, SIGNAL_ENDS[how], host="loopback")
    assert here[1:] == (137, "SIGKILL")
    assert there == here


async def test_remove_task_frees_the_bytes_a_remote_tasks_files_held_as_locally(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command="printf abc", host="loopback")
        await call(client, "wait_for_task", task_id=started["task_id"], timeout_seconds=20)
        base = started["log_path"].removesuffix(".log")  # the host is this machine
        files = [Path(base + suffix) for suffix in (".log", ".status", ".json", ".input", ".end")]
        held = sum(path.stat().st_blocks * 512 for path in files if path.exists())
        assert Path(started["log_path"]).stat().st_size == 3
        removed = await call(client, "remove_task", task_id=started["task_id"])
    assert removed["freed_bytes"] == held  # disk blocks, as for a local task's files (not sizes)
    assert not any(path.exists() for path in files)


async def test_what_a_host_keeps_for_remote_tasks_is_the_users_own(
    server_command: str, sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    remote_home = tmp_path / "remote" / "state"  # made by the agent, the first time
    config = tmp_path / "private_config"
    config.write_text(sshd.client_config(remote_home, "loopback"))
    env = {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}
    async with connect(server_command, args=ALLOW, env=env) as client:
        done = await call(client, "run_background_task", command="echo done", host="loopback", stdin=True)
        await call(client, "wait_for_task", task_id=done["task_id"], output_pattern="done", since=0)
        ended = await call(client, "run_background_task", command="sleep 300", host="loopback", stdin=True)
        await call(client, "end_background_task", task_id=ended["task_id"], grace_seconds=1)
        await call(client, "wait_for_task", task_id=done["task_id"], timeout_seconds=20)
    shared = []
    for directory, _, names in os.walk(remote_home):
        for path in [Path(directory), *(Path(directory) / name for name in names)]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                shared.append(f"{path.relative_to(remote_home)}: {oct(mode)}")
    kept = {path.name for path in (remote_home / "hosted").iterdir()}
    assert {f"{done['task_id']}.log", f"{done['task_id']}.status", f"{ended['task_id']}.end"} <= kept
    assert list((remote_home / "agent").glob("*.zip"))
    assert shared == []
    # Here too: what ssh said while the master started (STATE/ssh/*.err) is the user's alone.
    said = list((home / "ssh").glob("*.err"))
    assert said and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in said), said


async def test_a_remote_task_reports_the_containment_its_host_gives_it(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """The runner on a Linux host is a child subreaper (what drops its session and marker stays
    in its tree, see test_remote.py): the answers say subreaper, not marker."""
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command="sleep 300", host="loopback")
        status = await call(client, "get_task_status", task_id=started["task_id"])
        listed = await call(client, "list_tasks")
        ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=1)
    assert started["containment"] == status["containment"] == ended["containment"] == "subreaper"
    assert [t["containment"] for t in listed["tasks"]] == ["subreaper"]


async def test_resources_list_shows_the_same_tasks_remote_or_local_and_any_log_reads_by_its_uri(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """resources/list lists this server's tasks, those list_tasks shows: the ones it started and
    the ones it took over from a server that is gone, local and remote alike. Another live
    server's task is not listed (list_tasks(all=true) shows it), but its log reads by its URI."""
    async with connect(server_command, args=ALLOW, env=ssh_env) as other:
        theirs = await call(other, "run_background_task", command="echo theirs; sleep 300", host="loopback",
                            wait_for_pattern="theirs")  # fmt: skip
        async with connect(server_command, args=ALLOW, env=ssh_env) as doomed:
            left = [
                await call(
                    doomed, "run_background_task", command="echo left; sleep 300", wait_for_pattern="left", **where
                )
                for where in ({"host": "loopback"}, {"keep_running": True})
            ]
            await kill_server_of(left[1]["pid"])
        async with connect(server_command, args=ALLOW, env=ssh_env) as client:
            listed = {t["task_id"] for t in (await call(client, "list_tasks"))["tasks"]}
            resources = {str(r.uri) for r in (await client.list_resources()).resources}
            read = await client.read_resource(f"task://{theirs['task_id']}/log")
            for task in left:
                await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
        await call(other, "end_background_task", task_id=theirs["task_id"], grace_seconds=1)
    assert listed == {task["task_id"] for task in left}
    assert resources == {f"task://{task_id}/log" for task_id in listed}
    assert "theirs" in str(read.contents[0])
