"""Wake-up latency of wait_for_task: for an exit, and for a line matching a pattern.

The child prints a wall-clock timestamp (``date +%s.%N``) and then exits (exit case) or goes
on sleeping (pattern case); the wait was pending since 0.2 s before. The latency is the time
from that timestamp to the client holding the answer, so it includes one MCP response over
stdio. The baseline is that round trip alone: a ``get_task_status lines=0`` call timed in the
same run. Target (issue): within 50 ms of the line being written or the process exiting.
"""

from __future__ import annotations

import time

from _harness import Figure, Server, main, median, ms, serve, timed

NAME = "wait_for_task wake-up"
TARGET = "<= 50 ms"
LATENCY_TARGET = 0.050
WAIT_LIMIT = 30.0
CASES = {
    "exit": ("sleep 0.2; date +%s.%N", None),
    "pattern": ("sleep 0.2; date +READY%s.%N; sleep 30", "^READY"),
}


async def _one(server: Server, command: str, pattern: str | None) -> float:
    task = await server.start(command)
    arguments: dict[str, object] = {"task_id": task["task_id"], "timeout_seconds": WAIT_LIMIT}
    if pattern:
        arguments["output_pattern"] = pattern
    result = await server.call("wait_for_task", **arguments)
    received = time.time()
    expected = "pattern" if pattern else "exited"
    if result["reason"] != expected:
        raise RuntimeError(f"wait ended with {result['reason']}, not {expected}: {result}")
    printed = float(result["status"]["output"].strip().removeprefix("READY").splitlines()[-1])
    if pattern:
        await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
    await server.call("remove_task", task_id=task["task_id"])
    return received - printed


async def measure(quick: bool) -> list[Figure]:
    runs = 15 if quick else 50
    figures = []
    async with serve() as server:
        probe = await server.start("sleep 300")
        round_trips = [
            await timed(lambda: server.call("get_task_status", task_id=probe["task_id"], lines=0)) for _ in range(runs)
        ]
        base = median(round_trips)
        for case, (command, pattern) in CASES.items():
            latencies = [await _one(server, command, pattern) for _ in range(runs)]
            mid, worst = median(latencies), max(latencies)
            figures.append(
                Figure(
                    NAME,
                    f"{case}: median and worst of {runs} runs (baseline: one status round trip, median {ms(base)})",
                    f"median {ms(mid)} ({mid / base:.1f}x baseline), worst {ms(worst)}",
                    TARGET,
                    mid <= LATENCY_TARGET,
                )
            )
    return figures


if __name__ == "__main__":
    main(measure)
