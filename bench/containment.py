"""Containment: what each level costs to start a task and to end a 100-process tree.

For each level (``MCP_BACKGROUNDR_CONTAINMENT`` = marker, subreaper, cgroup, the last where this
machine can make cgroups) one server is started and measured:

- start: the latency of ``run_background_task`` for ``sleep 600`` (median of 30 calls); the
  cgroup level makes a cgroup and joins it before exec, which rules out vfork;
- end, honoured: ``end_background_task`` on a 100-process tree (a shell and 99 ``sleep``) whose
  members exit on SIGTERM;
- end, escalated: the same tree ignoring SIGTERM, with ``grace_seconds`` 0, so the time is the
  freeze (SIGSTOP and rescan, or the cgroup freezer) and the kill.

Each figure is also given as a ratio to the marker level, measured in the same run.
"""

from __future__ import annotations

import time

import anyio
from _harness import Figure, Server, main, median, serve

NAME = "containment"
LEVELS = ("marker", "subreaper", "cgroup")
STARTS = 30
TREE = 100
HONOURING = f"for i in $(seq {TREE - 1}); do sleep 600 & done; wait"
IGNORING = f"trap '' TERM; for i in $(seq {TREE - 1}); do sleep 600 & done; wait"
CONTAINMENT_ENV = "MCP_BACKGROUNDR_CONTAINMENT"


async def _start_latency(server: Server, count: int) -> float:
    took = []
    for _ in range(count):
        began = time.perf_counter()
        await server.start("sleep 600")
        took.append(time.perf_counter() - began)
    return median(took)


async def _end_latency(server: Server, command: str, grace: float) -> float:
    task = await server.start(command)
    with anyio.fail_after(60):
        while (await server.call("get_task_status", task_id=task["task_id"], lines=0))["process_count"] < TREE:
            await anyio.sleep(0.05)
    began = time.perf_counter()
    ended = await server.call("end_background_task", task_id=task["task_id"], grace_seconds=grace)
    took = time.perf_counter() - began
    if ended["survivors"]:
        raise RuntimeError(f"{len(ended['survivors'])} survivors at {ended['containment']}: {ended['survivors']}")
    return took


async def _level(level: str, quick: bool) -> tuple[str, float, float, float]:
    async with serve(env={CONTAINMENT_ENV: level}) as server:
        probe = await server.start("true")
        if probe["containment"] != level:
            return probe["containment"], 0.0, 0.0, 0.0
        start = await _start_latency(server, 10 if quick else STARTS)
        honoured = median([await _end_latency(server, HONOURING, 5) for _ in range(1 if quick else 3)])
        escalated = median([await _end_latency(server, IGNORING, 0) for _ in range(1 if quick else 3)])
    return level, start, honoured, escalated


async def measure(quick: bool) -> list[Figure]:
    results = {}
    for level in LEVELS:
        got, start, honoured, escalated = await _level(level, quick)
        if got == level:
            results[level] = (start, honoured, escalated)
    base = results["marker"]
    figures = []
    for level, (start, honoured, escalated) in results.items():
        ratios = [value / reference for value, reference in zip((start, honoured, escalated), base, strict=True)]
        figures += [
            Figure(NAME, f"{level}: start latency (median)", f"{start * 1000:.1f} ms ({ratios[0]:.2f}x marker)"),
            Figure(
                NAME,
                f"{level}: end a {TREE}-process tree that exits on SIGTERM",
                f"{honoured * 1000:.0f} ms ({ratios[1]:.2f}x marker)",
            ),
            Figure(
                NAME,
                f"{level}: end a {TREE}-process tree ignoring SIGTERM, grace 0 (freeze and kill)",
                f"{escalated * 1000:.0f} ms ({ratios[2]:.2f}x marker)",
            ),
        ]
    return figures


if __name__ == "__main__":
    main(measure)
