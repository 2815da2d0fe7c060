"""Shared scans of the machine: a call that needs little never waits for what others need.

The reads here are held up on purpose (a threading.Event), the way a socket-table read or a
process scan is held up on a loaded machine with thousands of processes; every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import anyio.to_thread
import psutil
import pytest

from mcp_backgroundr.config import PLATFORM_ENV
from mcp_backgroundr.platform import scans
from mcp_backgroundr.platform.containment import Leader, TaskCgroup
from mcp_backgroundr.platform.portable import PortableBackend

pytestmark = pytest.mark.anyio

BOUND_SECONDS = 10.0


async def test_showing_ports_does_not_wait_for_a_socket_table_read() -> None:
    release = threading.Event()
    reads: list[float] = []

    def read() -> scans.SocketTable:
        reads.append(time.monotonic())
        if len(reads) > 1:
            release.wait(BOUND_SECONDS)
        # taken a while ago: the next caller finds it due for a new read
        return scans.SocketTable(time.monotonic() - scans.SOCKET_TABLE_SECONDS, [], {"t1": [("127.0.0.1", 80, 1)]})

    async with anyio.create_task_group() as group:

        def in_background(work: Callable[[], Awaitable[None]]) -> None:
            async def run() -> None:
                await work()

            group.start_soon(run)

        sockets = scans.Sockets(in_background, read)
        first = await sockets.table()
        with anyio.fail_after(BOUND_SECONDS / 2):
            assert await sockets.of_tasks({"t1"}) == {"t1": [("127.0.0.1", 80, 1)]}  # starts a read, held up
            assert await sockets.recent() is first
            await anyio.to_thread.run_sync(lambda: _until(lambda: len(reads) == 2))
            assert await sockets.recent() is first, "a second read was started while one was under way"
        release.set()
        with anyio.fail_after(BOUND_SECONDS / 2):
            while await sockets.recent() is first:  # the read, once done, is what callers are shown
                await anyio.sleep(0.01)


def _until(condition: object) -> None:
    assert callable(condition)
    deadline = time.monotonic() + BOUND_SECONDS / 2
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


async def test_a_task_with_a_cgroup_does_not_wait_for_a_scan_of_the_machine() -> None:
    scanning, release = threading.Event(), threading.Event()

    def find(leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
        if any(leader.cgroup is None for leader in leaders.values()):
            scanning.set()
            release.wait(BOUND_SECONDS)
        return {leader.task_id: [] for leader in leaders.values()}

    found = scans.ProcessScans(find)
    boxed = Leader("boxed", cgroup=TaskCgroup((Path("/sys/fs/cgroup/no-such-task"),)))
    async with anyio.create_task_group() as group:
        group.start_soon(found.find, {1: Leader("plain")})
        await anyio.to_thread.run_sync(scanning.wait, BOUND_SECONDS)
        with anyio.fail_after(BOUND_SECONDS / 2):
            assert await found.find({2: boxed}) == {"boxed": []}
        release.set()


async def test_a_start_has_the_table_read_in_the_background_before_a_call_needs_it() -> None:
    reads: list[float] = []
    scheduled: list[Callable[[], Awaitable[None]]] = []

    def read() -> scans.SocketTable:
        reads.append(time.monotonic())
        return scans.SocketTable(time.monotonic(), [], {"t1": [("127.0.0.1", 80, 1)]})

    sockets = scans.Sockets(scheduled.append, read)
    sockets.prefetch()
    sockets.prefetch()  # one read under way is enough
    assert len(scheduled) == 1 and reads == []
    with anyio.fail_after(BOUND_SECONDS):
        await scheduled[0]()
        assert await sockets.of_tasks({"t1"}) == {"t1": [("127.0.0.1", 80, 1)]}
    sockets.prefetch()  # a recent table is there: nothing more
    assert len(scheduled) == 1 and len(reads) == 1
    aged = scans.Sockets(
        scheduled.append, lambda: scans.SocketTable(time.monotonic() - scans.SOCKET_TABLE_SECONDS, [], {})
    )
    with anyio.fail_after(BOUND_SECONDS):
        await aged.table()
    aged.prefetch()  # one past its age: read again
    assert len(scheduled) == 2


async def test_a_port_found_past_the_table_makes_the_next_showing_read_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """The portable backend's port wait asks the task's processes themselves when the table (read a
    moment before the server listened) shows nobody on the port. It answered ready, and the list made
    right after showed the task listening on nothing: it was shown that older table (CI on 51f5a87,
    tests/e2e/test_cli.py's `server &` test on the portable backend)."""
    monkeypatch.setenv(PLATFORM_ENV, "portable")
    reads: list[float] = []

    def read() -> scans.SocketTable:
        reads.append(time.monotonic())
        return scans.SocketTable(time.monotonic(), [], {})

    async def members() -> list[int]:
        return [os.getpid()]

    with socket.create_server(("127.0.0.1", 0)) as server, anyio.fail_after(BOUND_SECONDS):
        port = server.getsockname()[1]
        sockets = scans.Sockets(None, read)
        look = await sockets.who_listens("t1", port, time.monotonic(), members)
        assert look.holder is scans.PortHolder.TASK
        assert len(reads) == 1
        await sockets.recent()
        assert len(reads) == 2, "the table that did not show the port was shown again"


async def test_a_table_whose_read_began_before_a_port_was_found_past_it_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read under way (a start's prefetch, another client's list) when the port wait finds the port
    past the table saw the machine before the server listened: it must not be shown once the wait
    has answered ready. Its table was stamped when the read ended, after the find, and was shown."""
    monkeypatch.setenv(PLATFORM_ENV, "portable")
    reads: list[float] = []
    held, release = threading.Event(), threading.Event()

    def socket_table(self: object) -> tuple[list[object], dict[str, list[object]]]:
        reads.append(time.monotonic())
        if len(reads) == 2:  # the read under way: it looked before the server listened, and takes a while
            held.set()
            release.wait(BOUND_SECONDS)
        return [], {}

    monkeypatch.setattr(PortableBackend, "socket_table", socket_table)
    sockets = scans.Sockets()
    under_way: list[scans.SocketTable] = []

    with socket.create_server(("127.0.0.1", 0)) as server, anyio.fail_after(BOUND_SECONDS):
        port = server.getsockname()[1]
        async with anyio.create_task_group() as group:

            async def read_under_way(newer_than: float) -> None:
                under_way.append(await sockets.table(newer_than))

            async def members() -> list[int]:
                group.start_soon(read_under_way, time.monotonic())
                await anyio.to_thread.run_sync(lambda: _until(held.is_set))
                return [os.getpid()]

            look = await sockets.who_listens("t1", port, time.monotonic(), members)
            assert look.holder is scans.PortHolder.TASK
            release.set()
        shown = await sockets.recent()
    assert len(reads) == 3 and shown is not under_way[0], "a table read before the port was found was shown"
