"""Big log ranges are matched in matching processes, out of the server's interpreter lock
(logs/matching.py; docs/benchmarks.md 15, eighth pass): the answers stay the same, a killed
matching process is replaced, and none outlives its server."""

from __future__ import annotations

import contextlib
import signal

import anyio
import psutil
import pytest
from mcp import Client

from mcp_backgroundr.logs import matching

from .harness import call, call_error, connect, finished

pytestmark = pytest.mark.anyio

FILLER_LINES = 1_400_000
"""Lines of ``123456789`` before the one looked for: 14 MB, more than matching.FAR_BYTES."""
BIG_LOG = f"yes 123456789 | head -n {FILLER_LINES}; echo 'the needle 42'; yes abc | head -n 1000"
NEEDLE_CURSOR = FILLER_LINES * 10 + len("the needle 42\n")


def _matching_processes(server: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server).children():
        with contextlib.suppress(psutil.Error):  # a child that ended meanwhile
            if matching.__name__ in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _big_log_task(client: Client) -> tuple[str, int]:
    """A finished task with a big log; its id, and the server's pid."""
    probe = await call(client, "run_background_task", command="sleep 600")
    server = psutil.Process(probe["pid"]).ppid()
    await call(client, "end_background_task", task_id=probe["task_id"], grace_seconds=0)
    task = await call(client, "run_background_task", command=BIG_LOG)
    await finished(client, task["task_id"])
    return task["task_id"], server


async def _needle_found(client: Client, task_id: str) -> None:
    waited = await call(
        client, "wait_for_task", task_id=task_id, since=0, output_pattern=r"needle \d+$", timeout_seconds=60
    )
    assert waited["matched_line"] == "the needle 42", waited
    assert waited["matched_cursor"] == NEEDLE_CURSOR, waited
    status = await call(client, "get_task_status", task_id=task_id, grep="needle|^abc$")
    assert status["grep_matches"] == 1001, status
    assert status["output"].splitlines()[0] == f"{FILLER_LINES + 1}: the needle 42", status


async def test_a_wait_and_a_grep_from_0_of_a_big_log_match_in_a_matching_process(server_command: str) -> None:
    # A wait from cursor 0 of a 1 GiB log held the server's interpreter lock half the time with
    # its matching threads, and every other client's answer waited for it.
    async with connect(server_command) as client:
        task_id, server = await _big_log_task(client)
        assert _matching_processes(server) == []  # started on the first far step only
        await _needle_found(client, task_id)
        assert len(_matching_processes(server)) in (1, 2)
        # A pattern RE2 refuses still gets its one-line error, the server goes on.
        refused = await call_error(client, "get_task_status", task_id=task_id, grep=r"(a)\1")
        assert "grep=" in refused and "\n" not in refused, refused
        await _needle_found(client, task_id)


async def test_a_killed_matching_process_is_replaced(server_command: str) -> None:
    async with connect(server_command) as client:
        task_id, server = await _big_log_task(client)
        await _needle_found(client, task_id)
        killed = _matching_processes(server)
        for process in killed:
            process.send_signal(signal.SIGKILL)
        await _needle_found(client, task_id)  # made again in a new one: not an error
        now = {process.pid for process in _matching_processes(server)}
        assert now and not now & {process.pid for process in killed}, (now, killed)


async def test_matching_processes_die_with_their_server(server_command: str) -> None:
    async with connect(server_command) as client:
        task_id, server = await _big_log_task(client)
        await _needle_found(client, task_id)
        helpers = _matching_processes(server)
        assert helpers
        psutil.Process(server).kill()
        with anyio.fail_after(10):
            while alive := [
                helper for helper in helpers if helper.is_running() and helper.status() != psutil.STATUS_ZOMBIE
            ]:
                await anyio.sleep(0.02)
        assert not alive


async def test_shutdown_ends_the_matching_processes(server_command: str) -> None:
    async with connect(server_command) as client:
        task_id, server = await _big_log_task(client)
        await _needle_found(client, task_id)
        helpers = _matching_processes(server)
        assert helpers
    assert not any(_alive(helper) for helper in helpers)
