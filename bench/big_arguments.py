"""What one call with a big argument holds the server's event loop: every other client waits that long.

Each call is sent to a server run through ``bench/_loop_watch.py``; the loop callbacks of 20 ms or
more it ran meanwhile are summed (worst and total). Target (issue 10): none over 50 ms beyond the
transport's parse of the line, which no argument check can avoid (docs/reliability.md, never stall).

    python bench/big_arguments.py [--quick]     (BIG_SOURCE=DIR: the server from another checkout's src,
                                                 for a before/after)
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import Figure, Server, main, serve
from mcp import MCPError

NAME = "big arguments: event loop held per call"
SOURCE = os.environ.get("BIG_SOURCE")
MB = 1_000_000
CASES: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "env, 200,000 variables": (
        "run_background_task",
        lambda n: {"command": "true", "env": {f"K{i}": "v" for i in range(n)}},
    ),
    "env, 200,000 arrays": (
        "run_background_task",
        lambda n: {"command": "true", "env": {f"K{i}": [1] for i in range(n)}},
    ),
    "env, 200,000 numbers": (
        "run_background_task",
        lambda n: {"command": "true", "env": {f"K{i}": 1 for i in range(n)}},
    ),
    "argv, 500,000 arrays": ("run_background_task", lambda n: {"command": [[1]] * (n * 5 // 2)}),
    "argv, 500,000 numbers": ("run_background_task", lambda n: {"command": [1] * (n * 5 // 2)}),
    "list_tasks state, 20 MB": ("list_tasks", lambda n: {"state": "s" * (n * 100)}),
    "host, 20 MB": ("run_background_task", lambda n: {"command": "true", "host": "h" * (n * 100)}),
}
"""Each call: its tool and its arguments, from a scale (200,000 in full, 20,000 with --quick)."""


def _held(watch: Path, seen: int) -> tuple[list[tuple[float, float]], int]:
    """The loop callbacks recorded in ``watch`` past its first ``seen`` lines, each its wall and CPU
    time (ms: CPU is what the callback itself took, on a loaded machine too); how many lines it has."""
    lines = watch.read_text().splitlines() if watch.exists() else []
    held = []
    for line in lines[seen:]:
        wall, cpu = line.split("] ", 1)[1].split(" ms (CPU ", 1)
        held.append((float(wall), float(cpu.split(" ms", 1)[0])))
    return held, len(lines)


async def _call(server: Server, tool: str, arguments: dict[str, Any]) -> str:
    """The answer's text, or the error a message too heavy to read gets (tools/weighing.py)."""
    try:
        result = await server.client.call_tool(tool, arguments, read_timeout_seconds=120)
    except MCPError as refused:
        return f"error {refused.error.code}: {refused.error.message}"[:60]
    block = result.content[0] if result.content else None
    return str(getattr(block, "text", ""))[:60]


async def measure(quick: bool) -> list[Figure]:
    scale = 20_000 if quick else 200_000
    watch = Path(tempfile.mkstemp(prefix="big-arguments-")[1])
    env = {"LOOP_WATCH_MS": "20", "LOOP_WATCH_FILE": str(watch), **({"PYTHONPATH": SOURCE} if SOURCE else {})}
    command = [sys.executable, str(Path(__file__).with_name("_loop_watch.py"))]
    figures = []
    async with serve(command, env=env) as server:
        await server.call("list_tasks")
        _, seen = _held(watch, 0)
        for label, (tool, arguments) in CASES.items():
            answer = await _call(server, tool, arguments(scale))
            await server.call("list_tasks")  # the loop's callbacks of the big call are all recorded by now
            held, seen = _held(watch, seen)
            worst = max(held, default=(0.0, 0.0))
            total = [sum(times) for times in zip(*held, strict=True)] or [0.0, 0.0]
            value = f"worst {worst[0]:.0f} ms (CPU {worst[1]:.0f}), total {total[0]:.0f} ms (CPU {total[1]:.0f})"
            value += f": {answer}..."
            figures.append(Figure(NAME, label, value))
    watch.unlink()
    return figures


if __name__ == "__main__":
    main(measure)
