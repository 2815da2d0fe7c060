"""1,000 running tasks in one server: start time per task, list_tasks and status latency,
server memory per task, and the server's CPU while idle.

Baseline first, in the same server: one running ``sleep 600``. Then 999 more, started one
call after another (the time of the first and the last hundred starts are compared, to show
whether starting slows down as tasks accumulate). Figures are ratios to the one-task baseline.
Closing the client ends the tasks.
"""

from __future__ import annotations

import time

from _harness import Figure, main, median, ms, serve
from many_tasks import idle_cpu, list_latencies, status_latencies

NAME = "1,000 running tasks"
TASKS = 1_000
SAMPLE = 100
DEFAULT_LIMIT = 50
"""list_tasks lists this many (the newest) unless asked for more."""


async def measure(quick: bool) -> list[Figure]:
    calls = 10 if quick else 30
    idle = 2.0 if quick else 5.0
    async with serve() as server:
        first = await server.start("sleep 600")
        process = server.process()
        one_list = await list_latencies(server, process, calls, limit=TASKS)
        one_status = await status_latencies(server, first["task_id"], calls)
        one_cpu = await idle_cpu(process, idle)
        one_rss = process.memory_info().rss

        starts = []
        for _ in range(TASKS - 1):
            began = time.perf_counter()
            await server.start("sleep 600")
            starts.append(time.perf_counter() - began)
        running = await server.call("list_tasks", state="running", limit=TASKS)
        if len(running["tasks"]) != TASKS:
            raise RuntimeError(f"expected {TASKS} running tasks, list_tasks shows {len(running['tasks'])}")
        many_rss = process.memory_info().rss
        many_list = await list_latencies(server, process, calls, limit=TASKS)
        default_list = await list_latencies(server, process, calls, limit=DEFAULT_LIMIT)
        many_status = await status_latencies(server, first["task_id"], calls)
        many_cpu = await idle_cpu(process, idle)

    early, late = median(starts[:SAMPLE]), median(starts[-SAMPLE:])
    return [
        Figure(
            NAME,
            f"run_background_task, median of the first / last {SAMPLE} of {TASKS - 1} starts",
            f"{ms(early)} / {ms(late)} ({late / early:.2f}x); all {TASKS - 1} in {sum(starts):.1f} s",
        ),
        Figure(
            NAME,
            f"list_tasks(limit={TASKS}) via SDK Client.call_tool, median of {calls}",
            f"{ms(median(many_list.latencies))}; {median(many_list.latencies) / median(one_list.latencies):.1f}x "
            f"the 1-task baseline ({ms(median(one_list.latencies))})",
        ),
        Figure(
            NAME,
            f"list_tasks(limit={TASKS}) round trip, answer parsed as JSON only, median of {calls}",
            f"{ms(median(many_list.raw_latencies))}; "
            f"{median(many_list.raw_latencies) / median(one_list.raw_latencies):.1f}x the 1-task baseline "
            f"({ms(median(one_list.raw_latencies))}); server CPU per call {ms(many_list.server_cpu)}",
        ),
        Figure(
            NAME,
            f"list_tasks with its default limit ({DEFAULT_LIMIT} newest), via SDK / JSON only, median of {calls}",
            f"{ms(median(default_list.latencies))} / {ms(median(default_list.raw_latencies))}; server CPU per call "
            f"{ms(default_list.server_cpu)}",
        ),
        Figure(
            NAME,
            f"get_task_status(lines=0) of one task, median of {calls}",
            f"{ms(median(many_status))}; {median(many_status) / median(one_status):.1f}x the 1-task baseline "
            f"({ms(median(one_status))})",
        ),
        Figure(
            NAME,
            "server RSS per task",
            f"{(many_rss - one_rss) / (TASKS - 1) / 1024:.1f} KiB ({one_rss / 2**20:.1f} MiB with 1 task, "
            f"{many_rss / 2**20:.1f} MiB with {TASKS})",
        ),
        Figure(NAME, f"idle server CPU over {idle:g} s", f"{many_cpu}; 1-task baseline: {one_cpu}"),
    ]


if __name__ == "__main__":
    main(measure)
