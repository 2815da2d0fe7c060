"""End-to-end: a log's size cap holds while no server runs (issue 10, "never lose the disk").

A task outlives its server in two ways: its server was SIGKILLed (the next server ends it),
or it was started with keep_running (its runner keeps it going). Either way its log must
not grow without end meanwhile: the runner caps the log of a keep_running task itself, the
capping process of a dead server caps the logs of its tasks until they end, and a server
starting caps every log it finds over its cap.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import statistics
import struct
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr.config import HOME_ENV

from .harness import alive, call, connect, kill_server_of

pytestmark = pytest.mark.anyio

CAP = 1024 * 1024
OVERSHOOT_ALLOWED = 16
"""Median disk use allowed while `yes` writes, in caps: what tests/e2e/test_log_cap.py allows
a server (a fast writer gets ahead of the capper between two looks on a busy machine)."""
MIN_SAMPLES = 100
THROTTLED_WRITER = "while :; do head -c 1048576 /dev/zero | tr '\\0' y; sleep 0.05; done"
"""About 20 MB/s: it fills the disk while no server caps it, without taking gigabytes in the gap
before the next server starts."""


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _capping_processes(home: Path) -> list[psutil.Process]:
    """The capping processes of servers of this test's state directory."""
    return [
        process
        for process in psutil.process_iter(["cmdline", "environ"], ad_value=None)
        if "mcp_backgroundr.logs.capping" in (process.info["cmdline"] or ())
        and (process.info["environ"] or {}).get(HOME_ENV) == str(home)
    ]


async def _samples_while_it_writes(log: Path, written: int = 200 * CAP) -> list[int]:
    """The disk ``log`` takes, looked at every 5 ms until MIN_SAMPLES looks and ``written`` bytes written."""
    samples: list[int] = []
    with anyio.fail_after(60):
        while len(samples) < MIN_SAMPLES or os.stat(log).st_size < written:
            samples.append(_allocated(log))
            await anyio.sleep(0.005)
    return samples


async def test_the_log_of_a_killed_servers_task_stays_capped_until_the_next_server_ends_it(
    server_command: str, home: Path, platform_backend: str
) -> None:
    """Its capping process outlives a SIGKILLed server for as long as the server's tasks run: a
    `yes` under a 1 MiB cap took 1.9 GB in 3 s when it died with the server (a new-user trial)."""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="yes", max_log_bytes=CAP, wait_for_pattern="y")
        await kill_server_of(task["pid"])
    log = Path(task["log_path"])
    samples = await _samples_while_it_writes(log)
    async with connect(server_command) as client:
        status = await call(client, "get_task_status", task_id=task["task_id"], lines=1)
        assert alive([task["pid"]]) == []
    with anyio.fail_after(10):  # its task ended: the dead server's capping process ends too
        while _capping_processes(home):
            await anyio.sleep(0.02)
    assert status["state"] == "killed"
    assert any(later < earlier for earlier, later in itertools.pairwise(samples)), "its head was never dropped"
    if platform_backend == "linux":  # the portable backend's rewrite: see the note below
        assert statistics.median(samples) <= OVERSHOOT_ALLOWED * CAP


async def test_a_log_that_grew_while_no_server_ran_is_capped_by_the_next_server(server_command: str) -> None:
    """Nothing of the server left (its capping process killed too, as a reboot would): the next
    server caps the log it finds over its cap."""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=THROTTLED_WRITER, max_log_bytes=CAP)
        await kill_server_of(task["pid"], capping_too=True)
    log = Path(task["log_path"])
    with anyio.fail_after(30):  # no server: nothing caps it
        while _allocated(log) < 8 * CAP:
            await anyio.sleep(0.02)
    async with connect(server_command) as client:
        status = await call(client, "get_task_status", task_id=task["task_id"], lines=1)
        assert alive([task["pid"]]) == []
    assert status["state"] == "killed"
    assert status["dropped_bytes"] > 0
    assert _allocated(log) <= CAP


async def test_a_keep_running_task_stays_near_its_cap_after_its_client_leaves(
    server_command: str, platform_backend: str
) -> None:
    """Its runner caps its log (a `yes` took 477 MB within 2 s of its client leaving). The portable
    backend rewrites the log's kept quarter instead of punching a hole, which a writer as fast as
    `yes` outruns by as much as the machine's load lets it (README: Platforms; docs/benchmarks.md,
    17): there the writer is throttled to 20 MB/s, which the rewrite is for."""
    fast = platform_backend == "linux"
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command="yes" if fast else THROTTLED_WRITER,
            keep_running=True,
            max_log_bytes=CAP,
            wait_for_pattern="y",
        )
    log = Path(task["log_path"])
    try:  # no server runs from here on
        samples = await _samples_while_it_writes(log, 200 * CAP if fast else 40 * CAP)
    finally:
        with anyio.fail_after(60):
            await anyio.run_process([server_command, "stop", task["task_id"]])
    assert alive([task["pid"]]) == []
    assert statistics.median(samples) <= OVERSHOOT_ALLOWED * CAP


_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_APPEND_FL = 0x80086601, 0x40086602, 0x20


def _append_only(path: Path, on: bool) -> None:
    """Make ``path`` append-only (chattr +a), or not: it is written on, but its head cannot be dropped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8))[0]
        flags = flags | _FS_APPEND_FL if on else flags & ~_FS_APPEND_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("l", flags))
    finally:
        os.close(fd)


@pytest.mark.parametrize("keep_running", [True, False], ids=["its-runner", "the-servers-capping-process"])
async def test_a_log_that_could_not_be_capped_for_a_while_is_capped_again(
    server_command: str, keep_running: bool
) -> None:
    """Whoever caps a log (a supervised task's runner, else the server's capping process) stopped for
    good at its first failure to drop the log's head (here the log was append-only for a while; a full
    disk stops a rewrite so): the log then grew without end, with or without a server."""
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=THROTTLED_WRITER,
            keep_running=keep_running,
            max_log_bytes=CAP,
            wait_for_pattern="y",
        )
        log = Path(task["log_path"])
        try:
            try:
                _append_only(log, True)
            except OSError as exc:
                pytest.skip(f"this file system does not take chattr +a: {exc}")
            try:
                with anyio.fail_after(30):  # the runner cannot drop its head now
                    while _allocated(log) < 32 * CAP:
                        await anyio.sleep(0.02)
            finally:
                _append_only(log, False)
            with anyio.fail_after(60):
                while _allocated(log) > OVERSHOOT_ALLOWED * CAP:
                    await anyio.sleep(0.05)
            status = await call(client, "get_task_status", task_id=task["task_id"], lines=0)
        finally:
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    if not keep_running:  # the server's capping process says so (a runner, in the log)
        assert "its log could not be capped (Operation not permitted); tried again" in status["end_reason"], status
