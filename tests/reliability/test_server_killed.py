"""The server SIGKILLed while a task writes, then started again: the log is intact and the task
accounted for."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from mcp_backgroundr.store import orphans

from ..e2e.harness import alive, call, connect
from .rawwire import RawServer

pytestmark = [pytest.mark.reliability, pytest.mark.anyio]

# Numbered lines, flushed often, at about a megabyte a second: fast enough to be mid-write at any
# moment, slow enough to stay far under the default log cap while the test runs.
COUNTER = (
    'python3 -u -c "import itertools, time\n'
    "for i in itertools.count(1):\n"
    "    print(i)\n"
    '    if i % 500 == 0: time.sleep(0.005)"'
)
GROWTH_SECONDS = 20.0


async def grown_past(log: Path, size: int) -> int:
    """Wait (bounded) until the log is larger than ``size``; its new size."""
    with anyio.fail_after(GROWTH_SECONDS):
        while (now := log.stat().st_size) <= size:
            await anyio.sleep(0.02)
    return now


async def test_a_log_written_across_a_server_crash_is_whole_and_its_task_is_accounted_for(
    server_command: str,
) -> None:
    with RawServer(server_command) as crashed:
        crashed.initialize()
        answer = crashed.request("tools/call", {"name": "run_background_task", "arguments": {"command": COUNTER}})
        started = answer["result"]["structuredContent"]
        log = Path(started["log_path"])
        at_kill = await grown_past(log, 100_000)
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(10)
        # The task does not notice: it keeps writing with no server at all.
        await grown_past(log, at_kill)
        assert alive([started["pid"]])

    async with connect(server_command) as client:
        status = await call(client, "get_task_status", task_id=started["task_id"])
        assert status["state"] == "killed"
        assert status["end_reason"].startswith(orphans.ENDED_REASON)
        assert not alive([started["pid"]])

    data = log.read_bytes()
    assert len(data) == status["output_bytes"] > at_kill
    lines = data.split(b"\n")
    complete, last = lines[:-1], lines[-1]
    assert [int(n) for n in complete] == list(range(1, len(complete) + 1))
    assert str(len(complete) + 1).encode().startswith(last)
