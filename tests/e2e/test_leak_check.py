"""The autouse leak check (tests/conftest.py) sees every process a test's server started."""

from __future__ import annotations

from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr.config import HOME_ENV, TASK_ID_ENV

from ..conftest import _processes_using, _tasks_of
from .harness import call, connect

pytestmark = pytest.mark.anyio


async def test_it_finds_tasks_without_the_state_directory_variable_and_their_bare_children(
    server_command: str, home: Path
) -> None:
    async with connect(server_command, args=["serve", "--env-passthrough", "PATH"]) as client:
        task = await call(client, "run_background_task", command="env -i sleep 300 & echo started; wait")
        shell = psutil.Process(task["pid"])
        with anyio.fail_after(10):
            while [child.name() for child in shell.children()] != ["sleep"]:  # env has run sleep
                await anyio.sleep(0.02)
        bare = shell.children()[0]
        assert HOME_ENV not in shell.environ()
        assert TASK_ID_ENV in shell.environ()
        assert bare.environ() == {}
        found = {process.pid for process in _processes_using(home, "no tag", _tasks_of(home)[0])}
        assert {shell.pid, bare.pid, shell.ppid()} <= found
