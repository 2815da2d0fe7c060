"""The runner's restart decisions and backoff, without waiting for real time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mcp_backgroundr import runner
from mcp_backgroundr.models import TaskRecord, TaskState
from mcp_backgroundr.store import orphans


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
    assert runner.read_run_record(str(torn)) is None
    assert runner.read_run_record(str(tmp_path / "missing")) is None


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
    Path(record.run_record_path).write_text('{"state": "paused-by-a-newer-version"}')
    orphans.settle_from_runner(record)
    assert (record.state, record.end_reason) == (TaskState.FAILED, orphans.UNKNOWN_END_REASON)


EXECED = [
    ("sleep 300", "exec sleep 300"),
    ("  python3 -i", "  exec python3 -i"),
    ("PORT=8000 DEBUG='a b' npm run dev", "PORT=8000 DEBUG='a b' exec npm run dev"),
    ("python3 -c 'import os; print(1 | 2)' > out 2>&1", "exec python3 -c 'import os; print(1 | 2)' > out 2>&1"),
    ('grep "a;b && c" file >| out', 'exec grep "a;b && c" file >| out'),
    ("./serve --port=3000 x\\;y", "exec ./serve --port=3000 x\\;y"),
    ("/usr/bin/env A=1 prog", "exec /usr/bin/env A=1 prog"),
]
KEPT = [
    "sleep 1; sleep 2",
    "make && make test",
    "false || true",
    "a | b",
    "server &",
    "server & wait",
    "prog &> out",
    "(cd x; make)",
    "{ a; b; }",
    "if true; then sleep 1; fi",
    "cd /tmp",
    "echo hi",
    "exec sleep 1",
    "export A=1",
    "A=1",
    "A=1 B=2",
    "$EDITOR file",
    '"prog" arg',
    "> out prog",
    "2>err prog",
    "x=$(date)\nprog",
    "prog 'unterminated",
    "# a comment",
    "! false",
    "-x",
    "",
    "   ",
]


@pytest.fixture
def programs(tmp_path: Path) -> str:
    """A PATH holding the programs the examples name (the real ones need not be installed)."""
    for name in ("sleep", "python3", "npm", "grep", "cd", "echo", "exec", "export", "prog", "if"):
        program = tmp_path / name
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    return str(tmp_path)


@pytest.mark.parametrize(("command", "expected"), EXECED)
def test_one_simple_command_is_execed_in_place_of_its_shell(command: str, expected: str, programs: str) -> None:
    assert runner.exec_command(command, programs) == expected
    assert runner.shell_argv(command, programs) == [runner.SHELL, "-c", expected]


@pytest.mark.parametrize("command", KEPT)
def test_anything_but_one_simple_command_is_left_to_the_shell(command: str, programs: str) -> None:
    assert runner.exec_command(command, programs) == command


def test_a_program_not_on_the_path_keeps_its_shell_so_not_found_reads_as_written(programs: str) -> None:
    assert runner.exec_command("no-such-program-x --flag", programs) == "no-such-program-x --flag"
    assert runner.exec_command("sleep 1", "/nonexistent") == "sleep 1"
    missing = subprocess.run(runner.shell_argv("no-such-program-x"), capture_output=True, text=True, timeout=10)
    assert (missing.returncode, "exec" in missing.stderr) == (127, False), missing.stderr


def test_an_execed_command_runs_as_the_shell_would_run_it_in_the_shells_own_process(tmp_path: Path) -> None:
    script = 'A="x y" B=2 exec_probe one "two words" \'$HOME\' 2>&1'
    probe = tmp_path / "exec_probe"
    probe.write_text('#!/bin/sh\necho "$A|$B|$#|$1|$2|$3|$PPID" >&2\n')
    probe.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    with subprocess.Popen(runner.shell_argv(script, env["PATH"]), stdout=subprocess.PIPE, text=True, env=env) as shell:
        output, _ = shell.communicate(timeout=10)
    assert output.strip().split("|") == ["x y", "2", "3", "one", "two words", "$HOME", str(os.getpid())]
