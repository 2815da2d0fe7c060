"""The server's orphan reaper (it is child subreaper) and its own helper processes (ssh)."""

from __future__ import annotations

import shutil

import anyio
import pytest

from mcp_backgroundr.config import Settings
from mcp_backgroundr.core.supervisor import Supervisor
from mcp_backgroundr.platform.containment import Level
from mcp_backgroundr.remote import RemotePlace
from mcp_backgroundr.remote.ssh import parse_destination
from mcp_backgroundr.store.registry import Registry

pytestmark = pytest.mark.anyio

HELPERS = 300
AT_ONCE = 10


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's client is not installed")
async def test_the_orphan_reaper_never_takes_an_ssh_helper_from_its_own_watcher(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An ssh helper that exits at once (here ``ssh -O check`` of a master that is not there) is
    the server's child before its pid is known; the reaper, woken by its SIGCHLD, collected it,
    and asyncio's watcher said "Unknown child process pid N, will report returncode 255"."""
    settings.home.mkdir(parents=True)
    registry = Registry(settings.registry_path)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        state = supervisor._state
        assert state.containment.level is not Level.MARKER  # the reaper runs
        assert isinstance(state.away, RemotePlace)
        connections = state.away.tasks.connections
        destination = parse_destination("nowhere")
        with anyio.fail_after(120):
            for _ in range(HELPERS // AT_ONCE):
                async with anyio.create_task_group() as group:
                    for _ in range(AT_ONCE):
                        group.start_soon(connections._find_master, destination)
    registry.close()
    unknown = [r.getMessage() for r in caplog.records if "Unknown child process" in r.getMessage()]
    assert unknown == []
