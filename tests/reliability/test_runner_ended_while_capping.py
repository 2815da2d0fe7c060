"""A keep_running task's runner ended while it drops its log's head: the log keeps its tail.

Where no hole can be punched (the portable backend without F_PUNCHHOLE), the runner drops a
log's head by rewriting it: truncate, extend, write the kept tail back. A runner that exited
while a drop was under way left the log empty (seen in CI: `stop` on a keep_running `yes`
found a zero-byte log). The race is narrow, so this ends the real runner, capping a real
`yes`, at random moments many times over; before the fix about one run in thirty lost its log.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mcp_backgroundr import runner
from mcp_backgroundr.platform import heads

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

ROUNDS = 60
CAP = 1024 * 1024
END_SECONDS = 10.0


def _end_tree(root: subprocess.Popen[bytes]) -> None:
    """What ``mcp-backgroundr stop`` does to a task at the marker level: SIGTERM to every
    process of it at once, SIGKILL to what is left after the grace period."""
    processes = [psutil.Process(root.pid), *psutil.Process(root.pid).children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, left = psutil.wait_procs(processes, timeout=END_SECONDS)
    for process in left:
        process.kill()
    root.wait(END_SECONDS)


def test_a_runner_ended_at_any_moment_leaves_its_rewritten_log_whole(tmp_path: Path) -> None:
    chooser = random.Random(20261130)
    emptied = []
    for round_number in range(ROUNDS):
        log = tmp_path / f"{round_number}.log"
        with log.open("ab") as output:
            # runner.py RECORD POLICY MAX_RESTARTS REAPER COMMAND LOG MAX_LOG_BYTES HEAD_METHOD
            record = str(tmp_path / f"{round_number}.json")
            task = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    runner.__file__,
                    record,
                    "no",
                    "0",
                    "marker",
                    "yes",
                    str(log),
                    str(CAP),
                    heads.REWRITE,
                ],
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        # Once `yes` writes (a loaded machine may take longer than a moment to start the runner
        # and it: CI ended one before its first write, and its log was empty, never emptied).
        deadline = time.monotonic() + END_SECONDS
        while log.stat().st_size == 0 and time.monotonic() < deadline and task.poll() is None:
            time.sleep(0.01)
        with contextlib.suppress(psutil.TimeoutExpired):  # still running, as it should be
            psutil.Process(task.pid).wait(timeout=chooser.uniform(0.05, 0.5))
        _end_tree(task)
        if log.stat().st_size == 0:
            emptied.append(round_number)
        log.unlink()
    assert emptied == [], f"runs whose log was left empty: {emptied} of {ROUNDS}"
