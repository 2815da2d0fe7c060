"""Every wait status maps to a state, an exit code and (for a signal) a name; nothing raises."""

from __future__ import annotations

import signal

import pytest

from mcp_backgroundr import exits


@pytest.mark.parametrize("signum", range(1, 65))
def test_every_signal_has_a_name_and_exit_code_128_plus_n(signum: int) -> None:
    ended = exits.of(-signum)
    assert (ended.state, ended.exit_code) == ("failed", 128 + signum)
    assert ended.signal is not None
    assert ended.signal.startswith("SIG")
    assert exits.describe(-signum) == f"signal {ended.signal}"


def test_names_follow_the_platform_and_real_time_signals_count_from_sigrtmin() -> None:
    assert exits.signal_name(signal.SIGTERM) == "SIGTERM"
    assert exits.signal_name(signal.SIGRTMIN) == "SIGRTMIN"
    assert exits.signal_name(signal.SIGRTMIN + 6) == "SIGRTMIN+6"
    assert exits.signal_name(signal.SIGRTMAX) == "SIGRTMAX"
    assert exits.signal_name(32) == "SIG32"
    assert exits.signal_name(200) == "SIG200"


@pytest.mark.parametrize(("returncode", "state"), [(0, "completed"), (1, "failed"), (255, "failed")])
def test_exit_codes_keep_their_value(returncode: int, state: str) -> None:
    assert exits.of(returncode) == exits.Exit(state, returncode, None)


@pytest.mark.parametrize("returncode", [0, 3, -signal.SIGTERM, -signal.SIGKILL])
def test_a_run_asked_to_end_is_killed_however_it_ended(returncode: int) -> None:
    ended = exits.of(returncode, asked_to_end=True)
    assert ended.state == "killed"
    assert (ended.exit_code, ended.signal) == (exits.of(returncode).exit_code, exits.of(returncode).signal)
