"""End-to-end: waiting for readiness or death instead of polling."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from .harness import call, call_error, connect, text_of

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_line_printed_later_is_matched(server_command: str) -> None:
    """The line is printed once the test says so, after the cursor the wait starts from, so the
    wait matches it whether the server began waiting before or after it was written."""
    async with connect(server_command) as client:
        command = "echo booting; read port; echo ready on $port; sleep 300"
        task = await call(client, "run_background_task", command=command, stdin=True, wait_for_pattern="booting")
        cursor = task["wait"]["status"]["cursor"]
        result: dict[str, Any] = {}

        async def wait() -> None:
            result.update(
                await call(
                    client, "wait_for_task", task_id=task["task_id"], output_pattern=r"ready on \d+", since=cursor
                )
            )

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await call(client, "send_task_input", task_id=task["task_id"], text="3000")
    assert cursor == len("booting\n")
    assert result["reason"] == "pattern"
    assert result["matched_line"] == "ready on 3000"
    assert result["matched_cursor"] == len("booting\nready on 3000\n")
    assert result["status"]["state"] == "running"


async def test_only_lines_written_after_the_call_match_unless_since_says_otherwise(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo ready; sleep 300", wait_for_pattern="ready")
        later = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="ready", timeout_seconds=0.3
        )
        again = await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="ready", since=0)
    assert later["reason"] == "timeout"
    assert later["status"]["output"] == ""
    assert again["reason"] == "pattern"


async def test_an_exit_ends_a_pending_pattern_wait_with_the_last_output(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command="echo starting; sleep 0.3; echo 'Error: port in use' >&2; exit 1",
            wait_for_pattern="listening",
            wait_timeout_seconds=60,
        )
    wait = task["wait"]
    assert wait["reason"] == "exited"
    assert wait["waited_seconds"] < 30
    assert wait["status"]["exit_code"] == 1
    assert wait["status"]["output"] == "starting\nError: port in use\n"
    assert task["state"] == "failed"


async def test_a_dev_server_is_ready_when_its_port_accepts(server_command: str) -> None:
    port = _free_port()
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=f"python3 -m http.server {port} --bind 127.0.0.1",
            wait_for_port=port,
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        status = await call(client, "get_task_status", task_id=task["task_id"])
        listing = await call(client, "list_tasks")
    assert task["wait"]["reason"] == "port"
    assert task["state"] == "running"
    assert [(p["address"], p["port"]) for p in status["listening"]] == [("127.0.0.1", port)]
    assert listing["tasks"][0]["listening"] == [f"127.0.0.1:{port}"]
    assert status["process_count"] >= 1
    assert status["memory_rss_bytes"] > 1_000_000
    assert status["cpu_percent"] >= 0


async def test_progress_is_reported_and_a_cancelled_wait_leaves_everything_intact(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        server = psutil.Process(psutil.Process(task["pid"]).ppid())
        descriptors = server.num_fds()
        reported: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reported.append(progress)

        with pytest.raises(MCPError):
            await client.call_tool(
                "wait_for_task",
                {"task_id": task["task_id"], "output_pattern": "never", "timeout_seconds": 60},
                read_timeout_seconds=1.5,
                progress_callback=on_progress,
            )
        with anyio.fail_after(10):
            while server.num_fds() > descriptors:
                await anyio.sleep(0.02)
        status = await call(client, "get_task_status", task_id=task["task_id"])
    assert reported[:2] == [0.0, 1.0]
    assert status["state"] == "running"


async def test_bad_wait_arguments(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        bad: list[tuple[dict[str, object], str]] = [
            ({"output_pattern": "("}, "output_pattern"),
            ({"timeout_seconds": -1}, "timeout_seconds"),
            ({"timeout_seconds": 10**9}, "timeout_seconds"),
            ({"port": 0}, "port"),
            ({"port": 70000}, "port"),
            ({"since": 10**9}, "since"),
        ]
        for arguments, field in bad:
            message = await call_error(client, "wait_for_task", task_id=task["task_id"], **arguments)
            assert field in message, message
        message = await call_error(client, "run_background_task", command="true", wait_timeout_seconds=5)
        assert "wait_for_pattern" in message
        assert "task_id" in await call_error(client, "wait_for_task", task_id="nope")


async def test_bad_wait_conditions_on_run_are_refused_before_anything_starts(server_command: str) -> None:
    async with connect(server_command) as client:
        bad: list[tuple[dict[str, object], str]] = [
            ({"wait_for_pattern": "("}, "wait_for_pattern"),
            ({"wait_for_port": 0}, "wait_for_port"),
            ({"wait_for_pattern": "x", "wait_timeout_seconds": 10**6}, "wait_timeout_seconds"),
        ]
        for arguments, field in bad:
            message = await call_error(client, "run_background_task", command="sleep 300", **arguments)
            assert message.startswith(field), message
        assert (await call(client, "list_tasks"))["tasks"] == []


async def test_a_port_held_by_another_program_does_not_make_the_task_ready(server_command: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        command = f"python3 -m http.server {port} --bind 127.0.0.1"
        async with connect(server_command) as client:
            task = await call(client, "run_background_task", command=command, wait_for_port=port)
    assert task["wait"]["reason"] == "exited"
    assert "Address already in use" in task["wait"]["status"]["output"]


async def test_a_line_still_being_written_is_not_matched_half_way(server_command: str) -> None:
    command = "printf 'Listening on port 80'; sleep 0.2; printf '80\\n'; sleep 300"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, wait_for_pattern=r"port \d+")
    assert task["wait"]["matched_line"] == "Listening on port 8080"


async def test_a_pattern_written_last_after_400_mb_is_found_before_the_wait_times_out(server_command: str) -> None:
    """A wait scans the whole output for its pattern; line by line in Python, 400 MB took longer than
    the wait's 30 s, so a task that had printed the line and ended was answered 'timeout'. Blocks
    of plain lines are now searched in one call (RE2, in C), and only candidate lines are decoded."""
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command="yes abcdefghij | head -n 36000000; echo done",
            max_log_bytes=500_000_000,
            wait_for_pattern="^done$",
            wait_timeout_seconds=30,
        )
        found = await call(client, "get_task_status", task_id=task["task_id"], grep="^done$")
    assert task["wait"]["reason"] == "pattern", task["wait"]
    assert task["wait"]["matched_line"] == "done"
    assert found["grep_matches"] == 1, found
    assert found["output"].endswith("36000001: done"), found["output"][-200:]


async def test_a_wait_goes_on_past_a_progress_bar_line_longer_than_a_read(server_command: str) -> None:
    """A progress bar writes '\\r' updates and no newline: here a 2.4 MB line. A wait read the log a
    chunk (1 MiB) a step from where the last step stopped, and a step that found no line end gave
    nothing out: the next one started at the same place, so the wait never saw 'Done' after it."""
    bar = "import sys\nfor i in range(150000): sys.stdout.write('\\rdownloading %6d' % i)\nprint()\nprint('Done')"
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=f'python3 -c "{bar}"; sleep 300',
            wait_for_pattern="^Done$",
            wait_timeout_seconds=30,
        )
    assert task["wait"]["reason"] == "pattern", task["wait"]["reason"]
    assert task["wait"]["matched_line"] == "Done"


async def test_a_line_on_a_line_longer_than_a_read_is_found_in_an_ended_tasks_log(server_command: str) -> None:
    """A 2 MB line with NEEDLE in its second MiB, and NEEDLE again on the line after it, in the log of
    a task that has ended: a wait from cursor 0 found neither (it waited its whole time, then said
    'timeout' for an ended task); a wait past the first finds the second."""
    write = "import sys; sys.stdout.write('x' * 1500000 + 'NEEDLE 1' + 'y' * 500000 + '\\nNEEDLE 2\\n')"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=f'python3 -c "{write}"')
        ended = await call(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=30)
        first = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="NEEDLE", since=0, timeout_seconds=30
        )
        second = await call(
            client,
            "wait_for_task",
            task_id=task["task_id"],
            output_pattern="NEEDLE",
            since=first["matched_cursor"],
            timeout_seconds=30,
        )
    assert ended["reason"] == "exited", ended["reason"]
    assert first["reason"] == "pattern", first["reason"]
    assert "NEEDLE 1" in first["matched_line"]
    assert second["reason"] == "pattern", second["reason"]
    assert second["matched_line"] == "NEEDLE 2"


async def test_a_long_matching_line_is_shown_around_its_match_within_the_answer_budget(server_command: str) -> None:
    """A wait answered the whole matching line: 300 KB of it for this one (up to 2 MiB, a piece of a
    longer line), past the answer's budget of about 16 KiB. It now shows the part around the match,
    and says how much of the line is cut on either side."""
    write = "import sys; sys.stdout.write('x' * 200000 + 'NEEDLE' + 'y' * 100000 + '\\n')"
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command=f'python3 -c "{write}"; sleep 300', wait_for_pattern="NEEDLE"
        )
    line = task["wait"]["matched_line"]
    assert task["wait"]["reason"] == "pattern", task["wait"]["reason"]
    assert len(line) < 1000 and "NEEDLE" in line, line
    assert line.startswith("[... ") and line.endswith(" characters cut ...]"), line


async def test_the_last_state_of_a_progress_bar_line_longer_than_a_read_is_matched(server_command: str) -> None:
    """A line longer than a read (1 MiB) is matched in pieces, each shown as a terminal shows it (its
    last '\\r' update). Cut at every 1 MiB, the last piece of this bar began inside its last update
    ('ing 110376'), and a wait for that update never matched. Pieces now end where an update does."""
    updates = -(-2 * 1024 * 1024 // 19)  # 19 bytes each: the last one starts just before 2 MiB
    bar = f"import sys\nfor i in range({updates}): sys.stdout.write('\\rdownloading %6d' % i)\nprint()"
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=f'python3 -c "{bar}"; sleep 300',
            wait_for_pattern=f"^downloading {updates - 1}$",
            wait_timeout_seconds=20,
        )
    assert task["wait"]["reason"] == "pattern", task["wait"]["reason"]
    assert task["wait"]["matched_line"] == f"downloading {updates - 1}"


async def _wait_then_send(client: Client, task_id: str, pattern: str, seconds: float, text: str) -> dict[str, Any]:
    """A wait for ``pattern`` from the call on, and ``text`` sent to the task once the wait began
    (its first progress report comes once it waits)."""
    waiting = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        waiting.set()

    arguments = {"task_id": task_id, "output_pattern": pattern, "timeout_seconds": seconds}
    answer: dict[str, Any] = {}

    async def wait() -> None:
        result = await client.call_tool("wait_for_task", arguments, progress_callback=on_progress)
        assert not result.is_error and result.structured_content is not None, text_of(result)
        answer.update(result.structured_content)

    with anyio.fail_after(seconds + 20):
        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await waiting.wait()
            await call(client, "send_task_input", task_id=task_id, text=text)
    return answer


async def test_a_line_begun_before_the_wait_and_finished_during_it_is_matched(server_command: str) -> None:
    """'Listen' was written before the call and 'ing on port 80' during it: the wait began in the
    middle of the line, looked at its second half only, and timed out (a new-user trial). The
    line under way is matched from its start; what it showed before the wait ('>>> ', an old
    prompt a reply is echoed after) does not match again, and the output is still only what was
    written during the wait, marked as the end of a line begun before it."""
    command = (
        "printf 'Listen'; read go; printf 'ing on port 80\\n'; printf '>>> '; read again; "
        "printf 'print(1)\\n1\\n'; sleep 300"
    )
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, stdin=True, wait_for_pattern="Listen")
        task_id = task["task_id"]
        listening = await _wait_then_send(client, task_id, r"Listening on port \d+", 20, "go")
        await call(client, "wait_for_task", task_id=task_id, output_pattern="^>>> $", since=0, timeout_seconds=20)
        prompt = await _wait_then_send(client, task_id, "^>>> ", 2, "again")
    assert listening["reason"] == "pattern", listening
    assert listening["matched_line"] == "Listening on port 80"
    assert listening["matched_cursor"] == len("Listening on port 80\n")
    assert listening["status"]["output"].startswith(
        "[... the start of this line was written before the wait ...]ing on port 80\n"
    )
    assert prompt["reason"] == "timeout", prompt
    assert prompt["status"]["output"].endswith("print(1)\n1\n")
