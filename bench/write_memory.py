"""The server's RSS while a task writes 1 GiB, against its idle RSS.

The server process is found among this process's children (it is the parent of every task).
After a warm-up task (so every tool's code path has run once), a thread samples its RSS every
2 ms for 0.5 s of idle (idle RSS: the largest sample), then every 2 ms while a task writes
1 GiB (``head -c 1073741824 /dev/zero``) and the client polls get_task_status (lines=0) every
10 ms until it reports the exit (peak RSS: the largest sample). Each run's log is deleted.
"""

from __future__ import annotations

import anyio
from _harness import GIB, UNCAPPED, Figure, Sampler, main, mb, serve

NAME = "1 GiB write, server RSS"
TARGET_BYTES = 20 * 10**6
RUN_TIMEOUT = 120.0
IDLE_SECONDS = 0.5


async def measure(quick: bool) -> list[Figure]:
    repetitions = 1 if quick else 3
    runs: list[tuple[int, int]] = []
    async with serve(env=UNCAPPED) as server:
        process = server.process()
        startup_rss = process.memory_info().rss
        warm = await server.start("true")
        await server.wait_exit(warm["task_id"], RUN_TIMEOUT)
        await server.call("get_task_status", task_id=warm["task_id"], lines=100)
        await server.call("list_tasks")
        for _ in range(repetitions):
            with Sampler(process) as idle:
                await anyio.sleep(IDLE_SECONDS)
            with Sampler(process) as busy:
                task = await server.start(f"head -c {GIB} /dev/zero")
                await server.wait_exit(task["task_id"], RUN_TIMEOUT)
            server.remove_log(task["task_id"])
            runs.append((max(idle.samples), max(busy.samples)))

    worst_idle, worst_peak = max(runs, key=lambda run: run[1] - run[0])
    growth = worst_peak - worst_idle
    each = ", ".join(f"{mb(peak - idle)}" for idle, peak in runs)
    return [
        Figure(
            NAME,
            f"peak - idle RSS (worst of {repetitions} runs)",
            f"{growth / 1e6:+.1f} MB (idle {mb(worst_idle)}, peak {mb(worst_peak)}; "
            f"each run: {each}; RSS right after start {mb(startup_rss)})",
            "<= 20 MB",
            growth <= TARGET_BYTES,
        ),
        Figure(NAME, "peak / idle RSS", f"{worst_peak / worst_idle:.3f}x"),
    ]


if __name__ == "__main__":
    main(measure)
