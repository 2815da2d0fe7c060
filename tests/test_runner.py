"""The runner's restart decisions and backoff, without waiting for real time."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_backgroundr import orphans, runner
from mcp_backgroundr.models import TaskRecord, TaskState


def test_backoff_doubles_from_half_a_second_to_thirty_and_resets_after_a_healthy_run() -> None:
    delays = []
    previous = None
    for _ in range(9):
        previous = runner.next_backoff(previous, run_seconds=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert runner.next_backoff(30.0, run_seconds=runner.HEALTHY_RUN_SECONDS) == 0.5


@pytest.mark.parametrize(
    ("policy", "returncode", "restarts", "expected"),
    [
        ("no", 1, 0, False),
        ("on-failure", 1, 0, True),
        ("on-failure", 0, 0, False),
        ("on-failure", -15, 0, True),
        ("always", 0, 0, True),
        ("always", 0, 5, False),
    ],
)
def test_restart_decisions(policy: str, returncode: int, restarts: int, expected: bool) -> None:
    assert runner.should_restart(policy, returncode, restarts, max_restarts=5) is expected


def test_a_missing_or_torn_status_file_reads_as_none(tmp_path: Path) -> None:
    torn = tmp_path / "torn"
    torn.write_text('{"state": "run')
    assert runner.read_status(str(torn)) is None
    assert runner.read_status(str(tmp_path / "missing")) is None


def test_a_run_status_this_version_does_not_know_settles_as_unknown_instead_of_raising(tmp_path: Path) -> None:
    record = TaskRecord(
        task_id="t1",
        name=None,
        command="true",
        cwd="/",
        log_path=str(tmp_path / "t1.log"),
        owner="me",
        started_at=0.0,
        keep_running=True,
    )
    Path(record.status_path).write_text('{"state": "paused-by-a-newer-version"}')
    orphans.settle_from_runner(record)
    assert (record.state, record.end_reason) == (TaskState.FAILED, orphans.UNKNOWN_END_REASON)
