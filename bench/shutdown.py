"""Shutdown: the client closes stdin while 200 tasks (``sleep 600``) run.

Timed from the moment the client starts closing (it closes the server's stdin at once) until
the server process has exited (the SDK polls for that every 10 ms) and until every process of
the run, server and all 400 task processes (``sh`` and its ``sleep``), is gone, as polled every
2 ms by this process. The baseline is the same with one running task; the two alternate.
The server's own account of the shutdown (its stderr line) is quoted alongside.
"""

from __future__ import annotations

import re

from _harness import Closing, Figure, main, median, serve

NAME = "shutdown"
TASKS = 200
TARGET_SECONDS = 2.0
_SERVER_SAYS = re.compile(r"mcp-backgroundr: client closed stdin; ended (\d+) task\(s\) in ([\d.]+)s")


async def _close_with(tasks: int) -> Closing:
    async with serve() as server:
        for _ in range(tasks):
            await server.start("sleep 600")
    assert server.closing is not None
    return server.closing


def _server_says(closing: Closing) -> str:
    said = _SERVER_SAYS.search(closing.server_log)
    if said is None:
        return "did not report a clean shutdown (the client may have killed it)"
    return f"{said.group(1)} task(s) in {said.group(2)} s"


async def measure(quick: bool) -> list[Figure]:
    repetitions = 1 if quick else 3
    runs: dict[int, list[Closing]] = {1: [], TASKS: []}
    for rep in range(repetitions):
        for tasks in (1, TASKS) if rep % 2 == 0 else (TASKS, 1):
            runs[tasks].append(await _close_with(tasks))

    many, one = runs[TASKS], runs[1]
    gone, gone_one = median([c.all_gone_s for c in many]), median([c.all_gone_s for c in one])
    exited = median([c.server_exited_s for c in many])
    says = "; ".join(_server_says(c) for c in many)
    return [
        Figure(
            NAME,
            f"stdin closed -> server and all {TASKS} tasks gone, median of {repetitions}",
            f"{gone:.2f} s (server exited after {exited:.2f} s; runs: "
            f"{', '.join(f'{c.all_gone_s:.2f}' for c in many)} s; server says: {says}); "
            f"{gone / gone_one:.1f}x the 1-task baseline ({gone_one:.2f} s)",
            f"< {TARGET_SECONDS:g} s (every run)",
            max(c.all_gone_s for c in many) < TARGET_SECONDS,
        )
    ]


if __name__ == "__main__":
    main(measure)
