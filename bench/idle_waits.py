"""Server CPU while many wait_for_task calls without a progress token wait on a task that does
nothing, beside the same seconds with no wait (docs/benchmarks.md, idle waits).

Usage: python bench/idle_waits.py [--quick] [SERVER]: SERVER is the mcp-backgroundr to run (default:
the one beside this Python); for another checkout, a script that runs ``python -m mcp_backgroundr``
with that checkout's src on PYTHONPATH. Each wait's timeout stays under the bound on requests
without a progress token (45 s), so each waits it all.
"""

from __future__ import annotations

import functools
import sys

import anyio
import psutil
from _harness import Figure, Server, main, serve

WAITS = 1000
QUICK_WAITS = 200
MEASURED_SECONDS = 5.0
SETTLE_SECONDS = 2.0
"""After the last wait is sent: the server takes them all in before the measure begins."""
WAIT_SECONDS = 30.0
_server: list[str] | None = None
"""The server to run (None: the installed one); another checkout's, from the command line."""


async def _cpu_per_second(server: Server) -> float:
    """The server's CPU milliseconds per second over MEASURED_SECONDS."""
    began = server.cpu_seconds()
    await anyio.sleep(MEASURED_SECONDS)
    return (server.cpu_seconds() - began) * 1000 / MEASURED_SECONDS


async def measure(quick: bool) -> list[Figure]:
    waits = QUICK_WAITS if quick else WAITS
    async with serve(_server) as server:
        task = await server.start("sleep 300")
        alone = await _cpu_per_second(server)
        async with anyio.create_task_group() as group:
            arguments = {"task_id": task["task_id"], "timeout_seconds": WAIT_SECONDS}
            wait = functools.partial(server.call, "wait_for_task", **arguments)
            for _ in range(waits):
                group.start_soon(wait)
            await anyio.sleep(SETTLE_SECONDS)
            waiting = await _cpu_per_second(server)
            # Ended from outside: with 1,000 waits in flight, the bound on requests in flight (draining.py)
            # refuses the client's own end_background_task.
            psutil.Process(task["pid"]).kill()
    return [
        Figure("idle waits", "server CPU, no wait", f"{alone:.1f} ms/s"),
        Figure("idle waits", f"server CPU, {waits} waits", f"{waiting:.1f} ms/s", "< 5 ms/s", waiting < 5),
    ]


if __name__ == "__main__":
    _server = [arg for arg in sys.argv[1:] if arg != "--quick"] or None
    main(measure)
