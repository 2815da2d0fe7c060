"""End-to-end: what an answer says it left out is all it left out, and how to read it names a
call that exists where the answer is read.

A new-user trial found a wait's `truncation` leaving out what the log's cap dropped (about 4 MB
here, said to be the few hundred kilobytes kept before the text shown), and the resource
``task://ID/log`` advising arguments (`since`, fewer lines) a resource read does not take.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp_types import TextResourceContents

from mcp_backgroundr.logs import files

from .harness import call, connect, finished

pytestmark = pytest.mark.anyio

CAP = 64 * 1024
FIRST = "first\n"
CAPPED = (
    "yes | head -c 4000000; "
    # The task goes on once its log's cap has dropped the head (a hole: SEEK_DATA finds the kept
    # output past 0), so what a reader is told of the drop does not depend on the capper's pace.
    """until python3 -c 'import os, sys; sys.exit(os.lseek(1, 0, os.SEEK_DATA) == 0)'; do sleep 0.05; done; """
    "echo end"
)
WAIT_SECONDS = 60


def _dropped_from(status: dict[str, Any], start: int) -> str:
    """What an answer whose status is ``status``, read from ``start``, says of the cap's drop."""
    assert status["dropped_bytes"] > start, status
    return files.dropped_note(start, status["dropped_bytes"])


async def test_every_read_of_a_range_says_what_the_cap_dropped_in_it(server_command: str) -> None:
    async with connect(server_command) as client:
        started = await call(
            client, "run_background_task", command=f"printf '{FIRST}'; {CAPPED}", max_log_bytes=CAP,
            wait_for_pattern="^end$", wait_timeout_seconds=WAIT_SECONDS,
        )  # fmt: skip
        task_id = started["task_id"]
        await finished(client, task_id)
        waited = await call(client, "wait_for_task", task_id=task_id, since=len(FIRST), timeout_seconds=WAIT_SECONDS)
        read = await call(client, "get_task_status", task_id=task_id, since=len(FIRST))
    ready = started["wait"]
    assert ready["reason"] == "pattern"
    assert _dropped_from(ready["status"], 0) in ready["status"]["truncation"]
    assert waited["reason"] == "exited"
    assert _dropped_from(waited["status"], len(FIRST)) in waited["status"]["truncation"]
    assert _dropped_from(read, len(FIRST)) in read["truncation"]


async def test_a_wait_from_the_end_says_what_the_cap_dropped_after_it_began(server_command: str) -> None:
    """wait_for_task without since waits from the end of the output; the cap then drops past it."""
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command=f"printf '{FIRST}'; read go; {CAPPED}", stdin=True,
            max_log_bytes=CAP, wait_for_pattern="^first$",
        )  # fmt: skip
        task_id = task["task_id"]
        waited: dict[str, Any] = {}
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                result = await client.call_tool(
                    "wait_for_task", {"task_id": task_id, "output_pattern": "^end$", "timeout_seconds": WAIT_SECONDS},
                    progress_callback=begun,
                )  # fmt: skip
                waited.update(result.structured_content or {})

            async def begun(progress: float, total: float | None, message: str | None) -> None:
                under_way.set()  # the wait is under way, from the end of "first"

            under_way = anyio.Event()
            group.start_soon(wait)
            with anyio.fail_after(WAIT_SECONDS):
                await under_way.wait()
            await call(client, "send_task_input", task_id=task_id, text="")
        await finished(client, task_id)
    assert waited["reason"] == "pattern", waited
    assert _dropped_from(waited["status"], len(FIRST)) in waited["status"]["truncation"]


async def test_the_log_resource_advises_a_call_that_takes_its_arguments(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="python3 -c 'print(\"x\" * 40000)'")
        await finished(client, task["task_id"])
        read = await client.read_resource(f"task://{task['task_id']}/log")
        status = await call(client, "get_task_status", task_id=task["task_id"])
    content = read.contents[0]
    assert isinstance(content, TextResourceContents)
    note = content.text.rsplit("\n", 1)[-1]
    assert note == f"[{status['truncation']}]"
    assert "get_task_status" in note and "since=0" in note and "lines" in note, note
