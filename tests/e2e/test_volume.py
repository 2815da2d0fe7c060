"""End-to-end: large, fast, binary and endless output stays exact and bounded."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from .harness import call, connect, finished

pytestmark = pytest.mark.anyio

BUDGET = 16 * 1024
# Prints 200,000 numbered lines over about a second, so reads overlap the writing.
NUMBERED_LINES = (
    'python3 -c "import sys, time\n'
    "for i in range(200000):\n"
    "    sys.stdout.write(f'line {i}\\n')\n"
    '    if i % 4000 == 0: sys.stdout.flush(); time.sleep(0.02)\n"'
)


async def test_cursor_reads_while_writing_concatenate_to_every_line_exactly(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=NUMBERED_LINES)
        cursor, pieces, reads_while_running = 0, [], 0
        with anyio.fail_after(60):
            while True:
                status = await call(client, "get_task_status", task_id=task["task_id"], since=cursor)
                pieces.append(status["output"])
                assert status["cursor"] >= cursor
                assert len(status["output"].encode()) <= BUDGET
                reads_while_running += status["state"] == "running"
                done = status["state"] != "running" and status["cursor"] == status["output_bytes"]
                cursor = status["cursor"]
                if done:
                    break
    expected = "".join(f"line {i}\n" for i in range(200_000))
    assert "".join(pieces) == expected
    assert status["exit_code"] == 0
    assert reads_while_running > 1


async def test_one_50mb_line_is_bounded_and_marked(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="head -c 50000000 /dev/zero | tr '\\0' x")
        tail = await finished(client, task["task_id"])
        forward = await call(client, "get_task_status", task_id=task["task_id"], since=0)
    assert tail["output_bytes"] == 50_000_000
    assert tail["truncated"] is True
    assert tail["output"].startswith("[... line cut")
    assert tail["output"].endswith("x" * 1000)
    assert len(tail["output"].encode()) < BUDGET + 200
    assert forward["output"] == "x" * BUDGET
    assert forward["cursor"] == BUDGET
    assert f"since={BUDGET}" in forward["truncation"]


async def test_binary_output_comes_back_as_text_with_replacement_characters(server_command: str) -> None:
    # The last line starts after a newline of its own: the random bytes before it may end in
    # unreadable bytes too, and a run of 8 or more is shortened to a count.
    command = "printf 'start\\n'; head -c 20000 /dev/urandom; printf '\\n\\377\\376\\000end\\n'"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command)
        status: dict[str, Any] = await finished(client, task["task_id"], lines=1)
    assert status["state"] == "completed"
    assert status["output"] == "\ufffd\ufffd\ufffdend\n"
    assert status["output_bytes"] == 6 + 20_000 + 8


async def test_carriage_return_progress_shows_its_last_state(server_command: str) -> None:
    command = "for p in 10 50 100; do printf '\\rprogress %s%%' $p; done; printf '\\ndone\\n'"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command)
        status = await finished(client, task["task_id"])
    assert status["output"] == "progress 100%\ndone\n"


async def test_grep_over_100000_lines(server_command: str) -> None:
    command = "seq 1 100000 | sed 's/^\\(.*7777.*\\)$/ERROR \\1/'"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command)
        await finished(client, task["task_id"])
        found = await call(client, "get_task_status", task_id=task["task_id"], grep=r"^ERROR")
        none = await call(client, "get_task_status", task_id=task["task_id"], grep="nothing like this")
        bad = await client.call_tool("get_task_status", {"task_id": task["task_id"], "grep": "[unclosed"})
    expected = [f"{n}: ERROR {n}" for n in range(1, 100_001) if "7777" in str(n)]
    assert found["output"].splitlines() == expected
    assert found["grep_matches"] == len(expected)
    assert found["truncated"] is False
    assert (none["output"], none["grep_matches"]) == ("", 0)
    assert bad.is_error
