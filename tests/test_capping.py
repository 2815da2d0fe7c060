"""The capping process (logs/capping.py): a real child, told what to cap, telling what it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_backgroundr.logs.capping import RESTARTS, CapperProcess

pytestmark = pytest.mark.anyio

CAP = 1024 * 1024


async def test_the_capping_process_caps_what_it_is_told_and_says_what_it_cannot(tmp_path: Path) -> None:
    failures: list[tuple[Path, str]] = []
    capper = CapperProcess(on_failure=lambda path, note: failures.append((path, note)))
    log, missing = tmp_path / "task.log", tmp_path / "gone" / "task.log"
    log.write_bytes(b"line\n" * (CAP // 2))  # 2.5 caps, on disk
    async with anyio.create_task_group() as group:
        group.start_soon(capper.run)
        with anyio.fail_after(30):
            await capper.ready()
            helpers = capper.watched_helpers() or set()
            assert len(helpers) == 1
            capper.watch(log, CAP)
            capper.watch(missing, CAP)
            while os.stat(log).st_blocks * 512 > CAP or not failures:
                await anyio.sleep(0.02)
        await capper.stop()
        group.cancel_scope.cancel()
    assert [path for path, _ in failures] == [missing]
    assert failures[0][1].startswith("its log is not capped (") and "No such file or directory" in failures[0][1]
    assert log.stat().st_size == 5 * CAP // 2  # dropped as a hole: offsets keep their meaning
    assert not any(psutil.pid_exists(pid) for pid in helpers)


async def test_a_capping_process_that_keeps_ending_is_given_up_and_every_log_is_said_uncapped(tmp_path: Path) -> None:
    failures: list[tuple[Path, str]] = []
    capper = CapperProcess(on_failure=lambda path, note: failures.append((path, note)))
    kept, later = tmp_path / "kept.log", tmp_path / "later.log"
    kept.touch()
    seen: set[int] = set()
    async with anyio.create_task_group() as group:
        group.start_soon(capper.run)
        capper.watch(kept, CAP)
        with anyio.fail_after(60):
            while len(seen) < RESTARTS:  # each one killed as soon as it runs: started again, each time
                helpers = capper.watched_helpers() or set()
                for pid in helpers - seen:
                    seen.add(pid)
                    psutil.Process(pid).kill()
                await anyio.sleep(0.02)
            while not failures:
                await anyio.sleep(0.02)
        capper.watch(later, CAP)
        group.cancel_scope.cancel()
    assert [path for path, _ in failures] == [kept, later]
    assert all(f"ended {RESTARTS} times" in note for _, note in failures), failures
