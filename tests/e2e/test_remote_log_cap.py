"""End-to-end: a remote task's log stays near its cap while it is written, and under it once the task
has ended, capped on its host by the same code as a local runner's log (logs/holes.py)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import anyio
import pytest

from .harness import call, connect
from .test_log_cap import CAP, MIN_SAMPLES, OVERSHOOT_ALLOWED, PEAK_ALLOWED

pytestmark = pytest.mark.anyio

ALLOW = ("serve", "--allowed-ssh-host", "loopback")


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.mark.linux_backend("the host caps its logs itself, whichever backend the server uses")
async def test_yes_on_a_host_under_a_1mb_cap_stays_near_it_and_settles_under_it_after_the_end(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        task = await call(client, "run_background_task", command="yes", host="loopback", max_log_bytes=CAP)
        log = Path(task["log_path"])  # the "host" is this machine: its log can be looked at here
        samples: list[int] = []
        with anyio.fail_after(60):
            while len(samples) < MIN_SAMPLES or os.stat(log).st_size < 200 * CAP:
                samples.append(_allocated(log))
                await anyio.sleep(0.005)
        ended = await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
        with anyio.fail_after(10):  # the runner's last look, after the task's end, brings it under
            while (settled := _allocated(log)) > CAP:
                await anyio.sleep(0.01)
        status = await call(client, "get_task_status", task_id=task["task_id"], lines=3)
    assert ended["survivors"] == []
    assert status["output_bytes"] >= 200 * CAP and status["dropped_bytes"] > 150 * CAP
    assert status["output"] == "y\ny\ny\n"
    assert statistics.median(samples) <= OVERSHOOT_ALLOWED * CAP, statistics.median(samples) / CAP
    assert max(samples) <= PEAK_ALLOWED * CAP, max(samples) / CAP
    assert settled <= CAP
