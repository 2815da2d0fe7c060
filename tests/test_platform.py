"""The platform seam: choosing a backend, and the portable backend's own parts on real files and processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from mcp_backgroundr.config import PLATFORM_ENV
from mcp_backgroundr.errors import InvalidArgumentError
from mcp_backgroundr.logs import holes
from mcp_backgroundr.platform import backend, heads
from mcp_backgroundr.platform.polled import PolledEvents

pytestmark = pytest.mark.anyio

BACKENDS = [backend.LINUX, backend.PORTABLE]


def _popen(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, **options)


def test_auto_is_linux_on_linux_and_portable_elsewhere() -> None:
    assert backend.name_for(None, "linux") == backend.LINUX
    assert backend.name_for("auto", "darwin") == backend.PORTABLE
    assert backend.name_for(" Portable ", "linux") == backend.PORTABLE


def test_a_bad_or_impossible_choice_names_the_setting() -> None:
    with pytest.raises(InvalidArgumentError, match=f"{PLATFORM_ENV}.*use one of auto, linux, portable"):
        backend.name_for("windows", "linux")
    with pytest.raises(InvalidArgumentError, match="not Linux: use portable"):
        backend.name_for("linux", "darwin")


def test_the_environment_chooses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLATFORM_ENV, "portable")
    assert backend.current().name == backend.PORTABLE
    monkeypatch.setenv(PLATFORM_ENV, "linux")
    assert backend.current().name == backend.LINUX


def test_the_portable_backend_contains_at_the_marker_level_only() -> None:
    portable = backend.named(backend.PORTABLE)
    assert portable.choose_containment("auto", None).level == "marker"
    with pytest.raises(InvalidArgumentError, match="marker level only"):
        portable.choose_containment("cgroup", None)
    assert portable.head_method == (heads.FCNTL if sys.platform == "darwin" else heads.REWRITE)


@pytest.mark.parametrize("method", [heads.PUNCH, heads.REWRITE])
def test_a_dropped_head_keeps_size_and_offsets(tmp_path: Path, method: str) -> None:
    log = tmp_path / "task.log"
    lines = b"".join(b"line %06d\n" % n for n in range(100_000))
    log.write_bytes(lines)
    cut = 20 * heads.BLOCK
    heads.dropper(method)(str(log), 0, cut)
    with open(log, "rb") as file:
        assert heads.data_start(file.fileno()) == cut
    assert log.stat().st_size == len(lines)
    assert log.stat().st_blocks * 512 < len(lines) - cut // 2
    assert log.read_bytes()[cut:] == lines[cut:]


def test_a_rewrite_loses_nothing_appended_after_it(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    log.write_bytes(b"x" * 10 * heads.BLOCK)
    with open(log, "ab") as writer:
        heads.dropper(heads.REWRITE)(str(log), 0, 8 * heads.BLOCK)
        writer.write(b"after\n")
    assert log.read_bytes()[8 * heads.BLOCK :] == b"x" * 2 * heads.BLOCK + b"after\n"


async def test_polled_events_report_a_write_only_while_watched(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    log.write_bytes(b"")
    events = PolledEvents(0.01)
    handle = events.add(log)
    assert events.add(log) == handle  # the same path gives the same handle
    log.write_bytes(b"grew\n")
    with anyio.fail_after(5):
        assert await events.changed() == {handle}
    events.remove(handle)
    log.write_bytes(b"grew more\n")
    with anyio.move_on_after(0.1) as idle:
        await events.changed()
    assert idle.cancelled_caught
    events.close()


@pytest.mark.parametrize("name", BACKENDS)
async def test_each_backend_sees_a_child_exit_and_another_process_end(name: str) -> None:
    chosen = backend.named(name)
    child = _popen(["sh", "-c", "exit 3"])
    with anyio.fail_after(10):
        assert await chosen.wait_for_exit(child, chosen.exit_handle(child)) == 3
    other = _popen(["sleep", "30"])
    started = psutil.Process(other.pid).create_time()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(chosen.wait_until_ended, other.pid, started)
                other.kill()
            assert await chosen.wait_until_gone([psutil.Process(other.pid)], 5) == []
    finally:
        other.wait()


@pytest.mark.parametrize("name", BACKENDS)
async def test_each_backend_finds_a_listening_socket_of_a_task(name: str) -> None:
    chosen = backend.named(name)
    server = _popen(
        [
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        env=os.environ | {"MCP_BACKGROUNDR_TASK_ID": "tsockets1"},
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        _, by_task = await anyio.to_thread.run_sync(chosen.socket_table)
        assert [socket[1] for socket in by_task["tsockets1"]] == [port]
        usage = chosen.tree_usage([psutil.Process(server.pid)], by_task["tsockets1"])
        assert [socket[1] for socket in usage.listening] == [port]
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None
        server.stdout.close()


def test_stray_bytes_before_the_hole_are_not_taken_for_the_kept_output(tmp_path: Path) -> None:
    # What a rewrite leaves when the task appended in the instant the log was empty: a few
    # bytes at offset 0 (already copied to the end), the hole, then the kept output.
    log = tmp_path / "task.log"
    with open(log, "wb") as file:
        file.write(b"stray\n")
        file.seek(4 * heads.BLOCK)
        file.write(b"kept\nstray\n")
    assert holes.dropped_bytes(log) == 4 * heads.BLOCK
