"""Hostile output: NULs, invalid UTF-8, a 10 MB line, ANSI sequences, a carriage-return storm, and an
end in the middle of a character. Every answer stays bounded and readable, cursors stay exact, and
the server keeps serving."""

from __future__ import annotations

import pytest

from ..e2e.harness import call, connect, finished

pytestmark = [pytest.mark.reliability, pytest.mark.anyio]

BUDGET = 16 * 1024
ANSWER_LIMIT = 3 * BUDGET + 1024
"""A rendered answer: at most the budget in log bytes, each possibly shown as a 3-byte U+FFFD."""
HOSTILE = (
    'python3 -c "import sys\n'
    "w = sys.stdout.buffer.write\n"
    "w(b'nul\\x00bytes\\x00here\\n')\n"
    "w(b'bad utf-8 \\xff\\xfe\\xc3\\x28 end\\n')\n"
    "w(b'\\x1b[31mred\\x1b[0m \\x1b]0;a title\\x07\\x1b[2J\\x1b[10;5Hcursor\\n')\n"
    "w(b''.join(b'%d%%\\r' % i for i in range(200000)) + b'storm done\\n')\n"
    "w(b'L' * 10000000 + b'\\n')\n"
    "w(b'\\x00\\x01\\x02' * 30000 + b'\\n')\n"
    "w(b'last words \\xe2\\x82')\""
)


async def test_hostile_output_is_bounded_readable_and_exact(server_command: str) -> None:
    async with connect(server_command) as client:
        task = (await call(client, "run_background_task", command=HOSTILE))["task_id"]
        tail = await finished(client, task)
        assert tail["exit_code"] == 0
        assert len(tail["output"].encode()) <= ANSWER_LIMIT
        assert tail["output"].endswith("last words \ufffd")

        cursor, reads = 0, 0
        while cursor < tail["output_bytes"]:
            piece = await call(client, "get_task_status", task_id=task, since=cursor)
            assert len(piece["output"].encode()) <= ANSWER_LIMIT
            assert cursor < piece["cursor"] <= tail["output_bytes"]
            cursor, reads = piece["cursor"], reads + 1
        assert reads <= tail["output_bytes"] // BUDGET + 10

        head = (await call(client, "get_task_status", task_id=task, since=0))["output"]
        assert "nul\ufffdbytes\ufffdhere" in head and "bad utf-8 \ufffd" in head and " end" in head
        assert "\x1b" not in head and "red" in head and "cursor" in head
        raw = await call(client, "get_task_status", task_id=task, since=0, raw=True)
        assert "\x1b[31mred" in raw["output"]

        storm = await call(client, "get_task_status", task_id=task, grep="storm done")
        assert storm["grep_matches"] == 1 and storm["output"].rstrip().endswith("storm done")
        assert len(storm["output"].encode()) <= ANSWER_LIMIT

        assert (await call(client, "list_tasks"))["tasks"][0]["task_id"] == task
        echo = await call(client, "run_background_task", command="echo still serving")
        assert (await finished(client, echo["task_id"]))["output"] == "still serving\n"
