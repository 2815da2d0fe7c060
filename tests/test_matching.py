"""The matching processes (logs/matching.py): a step that kills its process fails with a one-line
error after one replacement, and the next step gets a new process."""

from __future__ import annotations

import os
import time

import pytest

from mcp_backgroundr.logs import matching


def test_a_step_runs_in_another_process_and_its_errors_come_back() -> None:
    processes = matching.MatchingProcesses(1)
    try:
        assert processes.run(os.getpid) != os.getpid()
        with pytest.raises(FileNotFoundError):
            processes.run(os.stat, "/nonexistent/path")
    finally:
        processes.stop()
    assert processes.pids() == set()


def test_a_process_that_ends_twice_in_a_step_fails_the_call_in_one_line_and_is_replaced() -> None:
    processes = matching.MatchingProcesses(1)
    try:
        first = processes.run(os.getpid)
        with pytest.raises(matching.MatchingError) as raised:
            processes.run(os._exit, 3)  # ends the process it runs in, each time
        assert "\n" not in str(raised.value)
        assert "call again" in str(raised.value)
        assert processes.run(os.getpid) not in (first, os.getpid())
    finally:
        processes.stop()
    assert processes.pids() == set()


def test_a_step_past_its_time_kills_its_process_and_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    step = matching.STEP_SECONDS
    monkeypatch.setattr(matching, "STEP_SECONDS", 0.3)
    processes = matching.MatchingProcesses(1)
    try:
        with pytest.raises(matching.MatchingError, match=r"no answer within 0\.3s") as raised:
            processes.run(time.sleep, 30)  # a stuck process: killed, the step made again, killed again
        assert "\n" not in str(raised.value)
        # A new process takes the next step. Its bound counts its start too, which a loaded machine
        # can stretch past 0.3 s: the next step has the usual bound.
        monkeypatch.setattr(matching, "STEP_SECONDS", step)
        assert processes.run(len, "abc") == 3
    finally:
        processes.stop()
    assert processes.pids() == set()
