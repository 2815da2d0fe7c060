"""300 running tasks: list_tasks latency and the server's idle CPU.

Baseline first, in the same server: one running ``sleep 600``; then 299 more. In each state:

- list_tasks is called a few times to warm up, then timed ``calls`` times through the SDK's
  ``Client.call_tool`` (which validates the answer against the tool's output schema), with the
  server's and this process's CPU time per call; then timed ``calls`` times more with the
  answer parsed as JSON only, which leaves out the client's validation;
- get_task_status (lines=0) of the first task is timed ``calls`` times (not a figure the issue
  asks for: it shows whether a status call's cost grows with the number of tasks);
- the server's CPU time (its own threads, not its children) is read before and after an idle
  window in which the client sends nothing: from psutil (user + system, 10 ms ticks) and from
  /proc/<pid>/task/*/schedstat (nanoseconds).

Closing the client ends the tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
from _harness import Figure, Server, main, median, ms, serve, timed

NAME = "300 running tasks"
TASKS = 300
TARGET = "well under 100 ms: median <= 50 ms, max < 100 ms"
WARM_UP = 3


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds, from psutil (clock-tick resolution: 10 ms)."""
    times = process.cpu_times()
    return times.user + times.system


def _on_cpu_seconds(process: psutil.Process) -> float:
    """Time its threads spent on a CPU, from /proc/<pid>/task/*/schedstat (nanosecond resolution)."""
    threads = Path(f"/proc/{process.pid}/task").glob("*/schedstat")
    return sum(int(stat.read_text().split()[0]) for stat in threads) / 1e9


@dataclass
class Listing:
    """list_tasks timings: through Client.call_tool, then as plain JSON round trips."""

    latencies: list[float]
    raw_latencies: list[float]
    """The same calls with the answer parsed only as JSON (no client-side schema validation)."""
    server_cpu: float
    """The server's CPU seconds per call."""
    client_cpu: float
    """This process's (the SDK client's) CPU seconds per call."""


def _well_under(latencies: list[float]) -> bool:
    return median(latencies) <= 0.05 and max(latencies) < 0.1


async def list_latencies(server: Server, process: psutil.Process, calls: int, limit: int = TASKS) -> Listing:
    """list_tasks with ``limit`` (by default every task of this benchmark)."""
    for _ in range(WARM_UP):
        await server.call("list_tasks", limit=limit)
    server_before, client_before = cpu_seconds(process), time.process_time()
    latencies = [await timed(lambda: server.call("list_tasks", limit=limit)) for _ in range(calls)]
    server_cpu, client_cpu = cpu_seconds(process) - server_before, time.process_time() - client_before
    raw = [await timed(lambda: server.call_raw("list_tasks", limit=limit)) for _ in range(calls)]
    return Listing(latencies, raw, server_cpu / calls, client_cpu / calls)


async def status_latencies(server: Server, task_id: str, calls: int) -> list[float]:
    async def status() -> object:
        return await server.call("get_task_status", task_id=task_id, lines=0)

    for _ in range(WARM_UP):
        await status()
    return [await timed(status) for _ in range(calls)]


async def idle_cpu(process: psutil.Process, seconds: float) -> str:
    """The server's CPU use over ``seconds`` of idle."""
    before, on_cpu_before, started = cpu_seconds(process), _on_cpu_seconds(process), time.perf_counter()
    await anyio.sleep(seconds)
    used, on_cpu = cpu_seconds(process) - before, _on_cpu_seconds(process) - on_cpu_before
    wall = time.perf_counter() - started
    return (
        f"psutil {used:.2f} CPU s ({100 * used / wall:.2f}% of a core); "
        f"schedstat {on_cpu * 1000:.3f} ms ({100 * on_cpu / wall:.4f}%)"
    )


async def measure(quick: bool) -> list[Figure]:
    calls = 10 if quick else 30
    idle = 2.0 if quick else 5.0
    async with serve() as server:
        first = await server.start("sleep 600")
        process = server.process()
        if first["pid"] not in {child.pid for child in process.children()}:
            raise RuntimeError(f"task pid {first['pid']} is not a child of the server {process.pid}")
        one_list = await list_latencies(server, process, calls)
        one_status = await status_latencies(server, first["task_id"], calls)
        one_cpu = await idle_cpu(process, idle)

        started = time.perf_counter()
        for _ in range(TASKS - 1):
            await server.start("sleep 600")
        start_all = time.perf_counter() - started
        listing = await server.call("list_tasks", state="running", limit=TASKS)
        if len(listing["tasks"]) != TASKS:
            raise RuntimeError(f"expected {TASKS} running tasks, list_tasks shows {len(listing['tasks'])}")
        many_list = await list_latencies(server, process, calls)
        many_status = await status_latencies(server, first["task_id"], calls)
        many_cpu = await idle_cpu(process, idle)

    sdk_one, sdk_many = median(one_list.latencies), median(many_list.latencies)
    raw_one, raw_many = median(one_list.raw_latencies), median(many_list.raw_latencies)
    return [
        Figure(
            NAME,
            f"list_tasks via SDK Client.call_tool, median / max of {calls}",
            f"{ms(sdk_many)} / {ms(max(many_list.latencies))}; {sdk_many / sdk_one:.1f}x the 1-task baseline "
            f"({ms(sdk_one)} / {ms(max(one_list.latencies))}); CPU per call: server {ms(many_list.server_cpu)}, "
            f"client {ms(many_list.client_cpu)}",
            TARGET,
            _well_under(many_list.latencies),
        ),
        Figure(
            NAME,
            f"list_tasks round trip, answer parsed as JSON only, median / max of {calls}",
            f"{ms(raw_many)} / {ms(max(many_list.raw_latencies))}; {raw_many / raw_one:.1f}x the 1-task baseline "
            f"({ms(raw_one)} / {ms(max(one_list.raw_latencies))})",
            TARGET,
            _well_under(many_list.raw_latencies),
        ),
        Figure(
            NAME,
            f"get_task_status(lines=0) of one running task, median / max of {calls}",
            f"{ms(median(many_status))} / {ms(max(many_status))}; {median(many_status) / median(one_status):.1f}x "
            f"the 1-task baseline ({ms(median(one_status))} / {ms(max(one_status))})",
        ),
        Figure(
            NAME,
            f"idle server CPU over {idle:g} s",
            f"{many_cpu}; 1-task baseline: {one_cpu}",
            "none in the issue (README: nothing polls)",
        ),
        Figure(
            NAME,
            f"starting {TASKS - 1} tasks one call after another",
            f"{start_all:.2f} s ({ms(start_all / (TASKS - 1))} per run_background_task)",
        ),
    ]


if __name__ == "__main__":
    main(measure)
