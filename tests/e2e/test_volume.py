"""End-to-end: large, fast, binary and endless output stays exact and bounded."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

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


HUGE_LINE = "python3 -c \"import sys; sys.stdout.write('L' * 3000000 + 'END\\n' + 'L' * 1000 + ' second\\n')\""


async def grep_a_line_longer_than_a_read(client: Client, host: str | None = None) -> None:
    """A 3 MB line is read in pieces of about 1 MiB: grep counted it once a piece that matched
    (grep_matches=2 for one line), its advice to go on ('since=2097152') gave the same line again,
    and a match in its last piece was shown as the line's head, without the match (a new-user
    trial). It is counted once, the advice leads to the next line, and the shown part holds the match."""
    task = await call(client, "run_background_task", command=HUGE_LINE, host=host)
    await finished(client, task["task_id"])
    both = await call(client, "get_task_status", task_id=task["task_id"], grep="L{1000}")
    assert both["grep_matches"] == 2, both["truncation"]
    assert both["output"].startswith("1: LLL"), both["output"][:100]
    assert len(both["output"].encode()) <= BUDGET
    since = int(both["truncation"].split("since=")[1].split()[0])
    assert both["truncation"].startswith("1 more matching lines do not fit"), both["truncation"]
    rest = await call(client, "get_task_status", task_id=task["task_id"], grep="L{1000}", since=since)
    assert rest["output"] == "2: " + "L" * 1000 + " second", rest["output"][:100]
    assert rest["grep_matches"] == 1
    end = await call(client, "get_task_status", task_id=task["task_id"], grep="LEND")
    assert end["grep_matches"] == 1
    assert end["output"].startswith("1: [... line cut ...][... "), end["output"][:100]
    assert end["output"].endswith("LLLEND"), end["output"][-100:]


async def test_grep_counts_a_line_longer_than_a_read_once_and_shows_its_match(server_command: str) -> None:
    async with connect(server_command) as client:
        await grep_a_line_longer_than_a_read(client)


ERRORS = (
    "for i in $(seq 1 5000); do echo line $i; "
    "[ $((i % 1000)) = 0 ] && printf '\\033[31mERROR\\033[0m at %s\\n' $i; done; true"
)


async def grep_with_lines_and_raw(client: Client, host: str | None = None) -> None:
    """grep ignored lines (lines=2 gave all 5 matches) and raw (the ANSI sequences were stripped),
    silently (a new-user trial). With lines, grep shows the last N matching lines (grep | tail -n N)
    and says how many matched; with raw, the lines keep their sequences (they match without them)."""
    task = await call(client, "run_background_task", command=ERRORS, host=host)
    await finished(client, task["task_id"])
    last = await call(client, "get_task_status", task_id=task["task_id"], grep="^ERROR at", lines=2)
    first = await call(client, "get_task_status", task_id=task["task_id"], grep="^ERROR at")
    raw = await call(client, "get_task_status", task_id=task["task_id"], grep="^ERROR at 5000$", raw=True)
    assert last["output"] == "4004: ERROR at 4000\n5005: ERROR at 5000", last["output"]
    assert (last["grep_matches"], last["truncated"]) == (5, True)
    assert last["truncation"].startswith("the last 2 of 5 matching lines"), last["truncation"]
    assert first["output"].splitlines()[0] == "1001: ERROR at 1000"
    assert (first["grep_matches"], first["truncated"]) == (5, False)
    assert raw["output"] == "5005: \x1b[31mERROR\x1b[0m at 5000", raw["output"]


async def test_grep_honours_lines_as_the_last_matches_and_raw(server_command: str) -> None:
    async with connect(server_command) as client:
        await grep_with_lines_and_raw(client)


UPDATES = (
    "printf 'abcdef\\rXY\\n'; printf 'Downloading 100%%\\r\\033[KDone\\n'; "
    "python3 -c \"import sys\nfor i in range(5000): sys.stdout.write(f'\\r{i:09d}')\n"
    "sys.stdout.write('\\rDONE     \\n')\""
)


async def test_carriage_return_updates_show_as_a_terminal_shows_them_and_a_read_never_cuts_one(
    server_command: str,
) -> None:
    """'abcdef\\rXY' showed 'XY' where a terminal shows 'XYcdef' (the README said 'as a terminal
    would'), and a read forward whose budget ended inside an update showed a piece of it ('000'), the
    update's whole never shown (a new-user trial). Updates are now written over each other as a
    terminal does (an erase of the line, ESC[K, clears what it does not overwrite), and a read that
    the budget cuts inside a line of updates ends where its last whole update does."""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=UPDATES)
        await finished(client, task["task_id"])
        head = await call(client, "get_task_status", task_id=task["task_id"], since=0)
        grep = await call(client, "get_task_status", task_id=task["task_id"], grep="^XYcdef$")
        cursor, shown = head["cursor"], [head["output"]]
        with anyio.fail_after(60):
            while cursor < head["output_bytes"]:
                read = await call(client, "get_task_status", task_id=task["task_id"], since=cursor)
                cursor, shown = read["cursor"], [*shown, read["output"]]
    assert head["output"].startswith("XYcdef\nDone\n"), head["output"][:40]
    assert grep["grep_matches"] == 1
    updates = [piece.split("\n")[-1] if i == 0 else piece.split("\n")[0] for i, piece in enumerate(shown)]
    assert all(update == "DONE     " or (len(update) == 9 and update.isdigit()) for update in updates), updates
    assert shown[-1] == "DONE     \n"
