from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr import runner
from mcp_backgroundr.config import TASK_ID_ENV
from mcp_backgroundr.errors import SpawnFailedError
from mcp_backgroundr.logs import files
from mcp_backgroundr.platform import containment, process

pytestmark = pytest.mark.anyio


def _spawn(tmp_path: Path, command: str, task_id: str = "t1") -> tuple[subprocess.Popen[bytes], Path]:
    log = files.create_log(tmp_path, task_id)
    fd = files.open_append(log)
    try:
        env = dict(os.environ) | {TASK_ID_ENV: task_id}
        return process.spawn([runner.SHELL, "-c", command], str(tmp_path), env, process.Streams(output=fd)), log
    finally:
        os.close(fd)


async def test_spawned_task_leads_its_session_and_writes_to_its_log(tmp_path: Path) -> None:
    popen, log = _spawn(tmp_path, "echo out; echo err >&2; exit 4")
    with anyio.fail_after(10):
        returncode = await process.wait_for_exit(popen, process.open_exit_handle(popen))
    assert returncode == 4
    assert log.read_bytes() == b"out\nerr\n"


async def test_exit_by_signal_is_a_negative_returncode(tmp_path: Path) -> None:
    popen, _ = _spawn(tmp_path, "kill -TERM $$")
    with anyio.fail_after(10):
        assert await process.wait_for_exit(popen, process.open_exit_handle(popen)) == -signal.SIGTERM


def test_spawn_failure_is_translated(tmp_path: Path) -> None:
    with pytest.raises(SpawnFailedError, match="could not start"):
        process.spawn(["true"], str(tmp_path / "missing"), {}, process.Streams(output=1))


async def test_processes_that_left_the_session_are_found_and_ended(tmp_path: Path) -> None:
    popen, log = _spawn(tmp_path, "setsid sh -c 'trap \"\" TERM; echo ready; sleep 300' & wait")
    with anyio.fail_after(10):
        while b"ready" not in log.read_bytes():
            await anyio.sleep(0.02)

    leaders = {popen.pid: containment.Leader("t1")}
    found = containment.find_task_processes(leaders)["t1"]
    sessions = {os.getsid(p.pid) for p in found}
    assert len(sessions) == 2  # the shell's own session and the one setsid made
    with anyio.fail_after(10):
        outcome = await containment.end_trees(leaders, 0.2, 2)
        await process.wait_for_exit(popen, process.open_exit_handle(popen))
    assert outcome.escalated
    assert outcome.survivors == []
    assert {p.pid for p in found} <= set(outcome.signalled)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in found)


async def test_ending_nothing_is_immediate() -> None:
    outcome = await containment.end_trees({}, 5, 5)
    assert outcome.signalled == []
    assert not outcome.escalated


def test_a_reused_leader_pid_is_not_taken_for_the_task(tmp_path: Path) -> None:
    # A process that leads the session numbered like a reaped leader, but started after the
    # reap, is a stranger: a fresh session leader stands in for one.
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        claimed = containment.find_task_processes({stranger.pid: containment.Leader("t1", reaped_at=0.0)})
        assert claimed["t1"] == []
        unreaped = containment.find_task_processes({stranger.pid: containment.Leader("t1")})
        assert [p.pid for p in unreaped["t1"]] == [stranger.pid]
    finally:
        stranger.kill()
        stranger.wait()


def test_a_child_that_ended_is_seen_without_being_waited_for() -> None:
    """refresh_all asks once whether any child ended before it asks each task (a waitpid each)."""
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it has ended, leaving it unwaited
    assert process.a_child_has_ended()
    assert child.wait(timeout=10) == 0  # still there to be waited for: the check took nothing
