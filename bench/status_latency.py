"""get_task_status(lines=100) latency on a 1 GiB log vs a 1 KiB log.

Both logs are the same 10-byte lines (``yes 123456789 | head -c N``), and both sizes leave the
same 4-byte partial line at the end, so both answers carry the same 100 lines: only the size of
the log differs. The calls alternate between the two finished tasks, after a few warm-up calls.
A third, informational log is 1 GiB of zero bytes with no newline at all: the worst case for
an answer, a full output budget of replacement characters.
"""

from __future__ import annotations

from functools import partial

from _harness import GIB, Figure, Server, main, median, ms, serve, timed

NAME = "get_task_status lines=100"
TARGET = "none in the issue; README: cost independent of log size (~1x)"
RUN_TIMEOUT = 120.0
WARM_UP = 5
LOGS = {
    "1 KiB log": "yes 123456789 | head -c 1024",
    "1 GiB log": f"yes 123456789 | head -c {GIB}",
    "1 GiB, no newline": f"head -c {GIB} /dev/zero",
}


async def _finished_task(server: Server, command: str) -> str:
    task = await server.start(command)
    await server.wait_exit(task["task_id"], RUN_TIMEOUT)
    return str(task["task_id"])


async def measure(quick: bool) -> list[Figure]:
    calls = 20 if quick else 50
    latencies: dict[str, list[float]] = {label: [] for label in LOGS}
    async with serve() as server:
        tasks = {label: await _finished_task(server, command) for label, command in LOGS.items()}
        for rep in range(WARM_UP + calls):
            for label, task_id in tasks.items():
                elapsed = await timed(partial(server.call, "get_task_status", task_id=task_id, lines=100))
                if rep >= WARM_UP:
                    latencies[label].append(elapsed)
        for task_id in tasks.values():
            server.remove_log(task_id)

    small, big, zeros = (median(latencies[label]) for label in LOGS)
    return [
        Figure(
            NAME,
            f"1 GiB log / 1 KiB log, median of {calls} calls each",
            f"{big / small:.2f}x (1 GiB {ms(big)}, 1 KiB {ms(small)}; max {ms(max(latencies['1 GiB log']))} "
            f"and {ms(max(latencies['1 KiB log']))})",
            TARGET,
        ),
        Figure(
            NAME,
            "1 GiB of NUL bytes, no newline (16 KiB answer) / 1 KiB log",
            f"{zeros / small:.2f}x ({ms(zeros)} vs {ms(small)})",
        ),
    ]


if __name__ == "__main__":
    main(measure)
