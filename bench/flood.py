"""A flood of waits: N concurrent wait_for_task on one running task, then a list_tasks behind them.

Reports, for each N (1,000 and 5,000; a fresh server each): how long the list_tasks sent right
after the N waits takes, as a ratio to the same call on the same server with no wait pending;
the server's CPU per wait (from the first wait sent until the server is quiet again, every wait
pending) and its RSS per wait (the growth over the same span); how many waits were refused (a
bound on requests in flight) and how long the pending ones took to be answered once their task
ended. The waits have a timeout of a minute: they are all pending while the list is answered.

    python bench/flood.py [--quick]     (FLOOD_SOURCE=DIR: the server from another checkout's src;
                                         FLOOD_GC=1: the server reports its garbage collections on
                                         stderr, through bench/_gc_watch.py)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from _harness import Figure, Server, main, median, ms, serve
from mcp.shared.exceptions import MCPError

NAME = "flood of waits"
FLOODS = (999, 1000, 5000)
"""999: the most waits a list_tasks sent behind them is answered with (the bound on requests in flight
is 1,000); more, and the list is refused at once, as the waits beyond the bound are."""
QUICK_FLOODS = (200, 1000)
WAIT_SECONDS = 60
BASELINE_CALLS = 20
QUIET_CPU_SHARE = 0.02
"""The server counts as quiet once it uses less than this share of a CPU over QUIET_SPAN seconds."""
QUIET_SPAN = 0.5
QUIET_LIMIT = 60.0
SOURCE = os.environ.get("FLOOD_SOURCE")
"""Run the server from this ``src`` directory (another checkout's, for a before/after)."""
GC_WATCH = bool(os.environ.get("FLOOD_GC"))


def _command() -> list[str] | None:
    if GC_WATCH:
        return [sys.executable, str(Path(__file__).with_name("_gc_watch.py"))]
    return [sys.executable, "-m", "mcp_backgroundr"] if SOURCE else None


async def _until_quiet(server: Server) -> None:
    """Return once the server's CPU use over QUIET_SPAN falls below QUIET_CPU_SHARE."""
    with anyio.fail_after(QUIET_LIMIT):
        while True:
            began = server.cpu_seconds()
            await anyio.sleep(QUIET_SPAN)
            if server.cpu_seconds() - began < QUIET_CPU_SHARE * QUIET_SPAN:
                return


async def _list_latency(server: Server) -> float:
    began = time.perf_counter()
    await server.call_raw("list_tasks")
    return time.perf_counter() - began


async def _flood(n: int) -> dict[str, Any]:
    env = {"PYTHONPATH": SOURCE} if SOURCE else {}
    env.update((key, value) for key, value in os.environ.items() if key.startswith("GC_WATCH_"))
    async with serve(_command(), env=env) as server:
        task = await server.start("sleep 300")
        await _list_latency(server)  # warm up
        idle = median([await _list_latency(server) for _ in range(BASELINE_CALLS)])
        await _until_quiet(server)
        process = server.process()
        cpu_before, rss_before = server.cpu_seconds(), process.memory_info().rss
        answers: list[float] = []
        refused: list[str] = []
        flooded: list[float] = []
        refused_list: list[str] = []
        ended_at = [0.0]

        async def wait() -> None:
            try:
                answer = await server.call_raw("wait_for_task", task_id=task["task_id"], timeout_seconds=WAIT_SECONDS)
            except MCPError as error:
                refused.append(error.error.message)
                return
            if answer.get("isError"):
                refused.append(str(answer.get("content")))
                return
            answers.append(time.perf_counter() - ended_at[0])

        async def list_behind() -> None:
            began = time.perf_counter()
            try:
                await server.call_raw("list_tasks")
            except MCPError as error:
                refused_list.append(error.error.message)
            flooded.append(time.perf_counter() - began)

        async with anyio.create_task_group() as group:
            for _ in range(n):
                group.start_soon(wait)
            group.start_soon(list_behind)
            while not flooded:
                await anyio.sleep(0.01)
            await _until_quiet(server)
            if GC_WATCH:
                process.send_signal(signal.SIGUSR1)
            cpu = server.cpu_seconds() - cpu_before
            rss = process.memory_info().rss - rss_before
            ended_at[0] = time.perf_counter()
            # Ended from outside: with the bound's worth of waits in flight, the client's own call is refused.
            psutil.Process(task["pid"]).kill()
    if GC_WATCH and server.closing is not None:
        for line in server.closing.server_log.splitlines():
            if line.startswith("gc-watch:"):
                print(f"{n} waits: {line}", file=sys.stderr)
    pending = n - len(refused)
    return {
        "idle": idle,
        "flooded": flooded[0],
        "cpu": cpu / max(pending, 1),
        "rss": rss / max(pending, 1),
        "refused": refused,
        "list_refused": bool(refused_list),
        "answered": max(answers, default=0.0),
    }


async def measure(quick: bool) -> list[Figure]:
    figures = []
    for n in QUICK_FLOODS if quick else FLOODS:
        got = await _flood(n)
        label = f"{n} waits"
        figures += [
            Figure(NAME, "list_tasks, no wait pending", ms(got["idle"])),
            Figure(
                NAME,
                f"list_tasks behind {label}",
                f"{'refused' if got['list_refused'] else 'answered'} in {ms(got['flooded'])} "
                f"({got['flooded'] / got['idle']:.0f}x)",
            ),
            Figure(NAME, f"server CPU per wait, {label}", f"{got['cpu'] * 1000:.3f} ms"),
            Figure(NAME, f"server RSS per wait, {label}", f"{got['rss'] / 1000:.1f} KB"),
            Figure(NAME, f"waits refused, {label}", str(len(got["refused"]))),
            Figure(NAME, f"all pending waits answered after the exit, {label}", ms(got["answered"])),
        ]
    return figures


if __name__ == "__main__":
    main(measure)
