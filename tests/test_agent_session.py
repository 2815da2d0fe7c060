"""An agent session closed while a call starts it (the server shutting down) fails that call with
the host's one-line error, never an AssertionError that ends the watcher calling it.

The session is under test, so ssh is replaced by a local stand-in for the remote agent: a real
process that reads the opening, waits until told, says it is ready and answers each line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest

from mcp_backgroundr.errors import HostUnreachableError
from mcp_backgroundr.remote.session import AgentSession
from mcp_backgroundr.remote.ssh import Connections, parse_destination

pytestmark = pytest.mark.anyio

STAND_IN_AGENT = """
import sys, time
sys.stdin.buffer.readline()                      # the opening
time.sleep(float(sys.argv[1]))                   # starting up
print("ready", flush=True)
for line in sys.stdin.buffer:
    print("answer", flush=True)
"""


class LocalConnections(Connections):
    """Channels that are local processes (see the module's docstring)."""

    def __init__(self, state_dir: Path, started: anyio.Event, startup_seconds: float) -> None:
        super().__init__(state_dir)
        self.started, self.startup_seconds = started, startup_seconds

    async def open_channel(self, destination: object, command: str) -> anyio.abc.Process:
        argv = [sys.executable, "-c", STAND_IN_AGENT, str(self.startup_seconds)]
        process = await anyio.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.started.set()
        return process


async def test_a_session_closed_while_it_starts_fails_the_call_in_one_line(tmp_path: Path) -> None:
    started = anyio.Event()
    session = AgentSession(LocalConnections(tmp_path, started, 0.3), parse_destination("devbox"))
    failures: list[BaseException] = []

    async def ask() -> None:
        try:
            await session.ask("agent", b"opening\n", b"status\n", limit=10)
        except HostUnreachableError as exc:
            failures.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            await started.wait()
            await session.close()  # while the agent is still starting
    assert len(failures) == 1 and "closed" in str(failures[0]), failures


async def test_a_session_answers_and_closes(tmp_path: Path) -> None:
    session = AgentSession(LocalConnections(tmp_path, anyio.Event(), 0), parse_destination("devbox"))
    with anyio.fail_after(10):
        assert await session.ask("agent", b"opening\n", b"status\n", limit=10) == b"answer"
        await session.close()
