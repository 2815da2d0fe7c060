"""End-to-end: of everything a server starts, only the server holds its client's stdin, stdout and stderr.

A client knows its server has gone once the server's stdout and stderr are closed (Node's
child_process 'close' event waits for every pipe; `mcp-backgroundr | cut` waits for its end of
file). A process of the server's that can outlive it (its capping process, a matching process, a
keep_running task's runner, an ssh connection, a task) holding one of them keeps that client
waiting for as long as it lives: with a dev server running, for hours.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import psutil
import pytest

from ..reliability.rawwire import RawServer
from .harness import alive, call, connect, finished

pytestmark = pytest.mark.anyio

CLOSED_SECONDS = 5.0
"""How long a SIGKILLed server's stdout and stderr may take to reach their end (a moment, once
nothing else holds them)."""
BIG_LOG = "yes 123456789 | head -n 500000"
"""5 MB of log: a grep of it from the start is made by a matching process (logs/matching.py, FAR_BYTES)."""


def _client_streams(server: int, errlog: Path) -> set[str]:
    """The server's stdin and stdout, as this process (its client) holds their other ends (the
    server keeps them on descriptors of its own, with /dev/null and stderr on 0 and 1), and its stderr."""
    return {stream for stream in _descriptors(server) & _descriptors(os.getpid()) if stream.startswith("pipe:")} | {
        str(errlog)
    }


def _descriptors(pid: int) -> set[str]:
    """What the process's open descriptors are (``pipe:[inode]``, a file's path)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def _holders(streams: Collection[str], besides: Collection[int]) -> dict[int, str]:
    """Every process but ``besides`` that holds one of ``streams``, with its command line."""
    found: dict[int, str] = {}
    for process in psutil.process_iter(["cmdline"], ad_value=None):
        if process.pid in besides:
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to look at
            if _descriptors(process.pid) & set(streams):
                found[process.pid] = " ".join(process.info["cmdline"] or ())
    return found


@pytest.mark.parametrize("host", [None, "loopback"])
async def test_no_process_the_server_starts_holds_its_clients_stdio(
    server_command: str, tmp_path: Path, host: str | None, request: pytest.FixtureRequest
) -> None:
    """The capping process, and matching processes, had the server's stderr for their own: the
    client's pipe, held open for as long as a SIGKILLed server's tasks ran (a new-user trial)."""
    env: dict[str, str] = request.getfixturevalue("ssh_env") if host else {}
    args = ("serve", "--allowed-ssh-host", "loopback") if host else ()
    errors = tmp_path / "server.err"
    with errors.open("w") as errlog:
        async with connect(server_command, errlog=errlog, args=args, env=env) as client:
            first = await call(client, "run_background_task", command="sleep 300")
            server = psutil.Process(first["pid"]).ppid()
            await call(client, "run_background_task", command="sleep 300", keep_running=True)
            await call(client, "run_background_task", command="cat", stdin=True)
            await call(client, "run_background_task", command="cat", stdin=True, keep_running=True)
            await call(client, "run_background_task", command="sleep 300", pty=True)
            big = await call(client, "run_background_task", command=BIG_LOG)
            await finished(client, big["task_id"])
            await call(client, "get_task_status", task_id=big["task_id"], grep="no such line")
            if host:
                await call(client, "run_background_task", command="sleep 300", host=host)
                await call(client, "run_background_task", command="sleep 300", host=host, keep_running=True)
            streams = _client_streams(server, errors)
            assert len(streams) == 3, streams
            holders = _holders(streams, besides={server, os.getpid()})
            for task in (await call(client, "list_tasks"))["tasks"]:
                if task["state"] == "running":
                    await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert holders == {}, f"the client's stdin, stdout or stderr is held by {holders}"


def test_a_sigkilled_servers_stdout_and_stderr_close_with_it(server_command: str) -> None:
    """A client waiting for the end of a SIGKILLed server's stderr waited until its last task ended
    (20 s for `sleep 20`): the capping process, which caps that task's log meanwhile, held it."""
    with RawServer(server_command, stderr=subprocess.PIPE) as server:
        server.initialize()
        started = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": "sleep 300"}})
        task = started["result"]["structuredContent"]
        server.process.kill()
        server.process.wait()
        assert server.process.stdout is not None and server.process.stderr is not None
        closed = _until_closed([server.process.stdout.fileno(), server.process.stderr.fileno()])
        server.process.stderr.close()
    with RawServer(server_command) as server:  # the next server ends the task left behind
        server.initialize()
        listed = server.request("tools/call", {"name": "list_tasks", "arguments": {}})
    assert listed["result"]["structuredContent"]["tasks"] == [], listed
    assert alive([task["pid"]]) == []
    assert closed == {"stdout": True, "stderr": True}, closed


def _until_closed(descriptors: list[int]) -> dict[str, bool]:
    """Read ``descriptors`` (stdout, stderr) until each reaches its end or CLOSED_SECONDS pass;
    which of them did."""
    names = dict(zip(descriptors, ("stdout", "stderr"), strict=True))
    closed = dict.fromkeys(names.values(), False)
    deadline = time.monotonic() + CLOSED_SECONDS
    open_ones = list(descriptors)
    while open_ones and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(open_ones, [], [], left)
        for fd in readable:
            if not os.read(fd, 1 << 16):
                closed[names[fd]] = True
                open_ones.remove(fd)
    return closed
