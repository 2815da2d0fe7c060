"""Disk use of a capped log under the fastest writer there is (`yes`), and what capping costs.

A task runs `yes` with max_log_bytes = 1 MiB (then the default, 64 MiB) for a few seconds while this process samples the
log's allocated blocks every 2 ms; the baseline is the cap itself. The server's CPU time over
the same seconds is the price of dropping old output as fast as `yes` writes it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import anyio
from _harness import GIB, UNCAPPED, Figure, Server, main, serve, spread

NAME = "log cap under `yes`"
CAP = 1024 * 1024
CAPS = (CAP, 64 * CAP)
"""The cap the issue's test uses, and the default."""
SAMPLE_INTERVAL = 0.002


async def _one(cap: int, seconds: float) -> list[Figure]:
    label = f"{cap // CAP} MiB"
    async with serve() as server:
        task = await server.call("run_background_task", command="yes", max_log_bytes=cap)
        log = Path(task["log_path"])
        cpu_before = server.cpu_seconds()
        samples: list[int] = []
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            samples.append(os.stat(log).st_blocks * 512)
            await anyio.sleep(SAMPLE_INTERVAL)
        cpu = server.cpu_seconds() - cpu_before
        written = os.stat(log).st_size
        await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
        server.remove_log(task["task_id"])
    median, shown = spread(samples, cap)
    return [
        Figure(
            NAME,
            f"allocated on disk / cap ({label}), {len(samples)} samples over {seconds:g} s",
            f"{shown}; {written / 1e9:.1f} GB written meanwhile",
            "stays near the cap",
            median <= cap,
        ),
        Figure(
            NAME,
            f"server CPU while capping ({label})",
            f"{cpu:.2f} CPU s over {seconds:g} s ({cpu / seconds:.0%} of a core)",
        ),
    ]


async def _write_time(env: dict[str, str] | None, repetitions: int) -> float:
    """Median time to write 1 GiB as a task, from start to wait_for_task seeing the exit."""
    times = []
    async with serve(env=env) as server:
        for _ in range(repetitions):
            began = time.perf_counter()
            task = await server.call("run_background_task", command=f"head -c {GIB} /dev/zero")
            await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=120)
            times.append(time.perf_counter() - began)
            server.remove_log(task["task_id"])
    return statistics.median(times)


WRITE_200MB = 200 * 1000 * 1000
UNCAPPED_BYTES = 4 * GIB
"""A cap the 200 MB write does not reach."""
WRITERS = 10
BURSTS = {
    "the side-by-side run's writer": f"yes {'x' * 99} | head -c {WRITE_200MB}",
    "`head -c /dev/zero`": f"head -c {WRITE_200MB} /dev/zero",
}
"""The 200 MB write of bench/peers.py (and issue 10): 100-byte lines through a pipe, about 1 GB/s
here; and the fastest writer there is, about twice that."""


def _shell_write(directory: Path, command: str) -> float:
    """Seconds for a plain shell to run ``command`` into a file, from spawn to reap."""
    target = directory / "shell.out"
    began = time.perf_counter()
    subprocess.run(["sh", "-c", f"{{ {command}; }} > {target}"], check=True)
    elapsed = time.perf_counter() - began
    target.unlink()
    return elapsed


async def _server_write(server: Server, command: str, **arguments: object) -> tuple[float, int]:
    """Seconds for the server to run ``command``, from start to ``wait_for_task`` seeing the
    exit, and how many bytes its log had dropped when the exit was answered."""
    began = time.perf_counter()
    task = await server.call("run_background_task", command=command, **arguments)
    await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=120)
    elapsed = time.perf_counter() - began
    status = await server.call("get_task_status", task_id=task["task_id"], lines=0)
    server.remove_log(task["task_id"])
    return elapsed, status["dropped_bytes"]


async def _capped_write_against_shell(label: str, command: str, repetitions: int) -> list[Figure]:
    """200 MB written under the default 64 MiB cap (so it is hit), the same under a cap it does
    not reach, and by a plain shell, one after the other in each repetition. Capping's own share is
    the median of each repetition's capped / uncapped time: the two runs are next to each other,
    so they meet the same load (a ratio of medians mixes repetitions from different moments).

    Whether the cap was hit before the exit was answered is a figure, not a condition: a burst
    written while the capper waits for a CPU may end before its first look (a loaded machine)."""
    capped, uncapped, shell, hits = [], [], [], 0
    async with serve() as server:
        for _ in range(repetitions):
            elapsed, dropped = await _server_write(server, command)
            capped.append(elapsed)
            hits += dropped > 0
            uncapped.append((await _server_write(server, command, max_log_bytes=UNCAPPED_BYTES))[0])
            shell.append(await anyio.to_thread.run_sync(_shell_write, server.home, command))
    share = sorted(c / u for c, u in zip(capped, uncapped, strict=True))
    against_shell = statistics.median(c / s for c, s in zip(capped, shell, strict=True))
    plain = statistics.median(u / s for u, s in zip(uncapped, shell, strict=True))
    times = f"{statistics.median(capped):.3f} s, {statistics.median(uncapped):.3f} s, {statistics.median(shell):.3f} s"
    return [
        Figure(
            NAME,
            f"200 MB by {label} under the default 64 MiB cap / the same under a 4 GiB cap (capping's "
            f"own share), median of {repetitions} adjacent pairs",
            f"{statistics.median(share):.2f}x (each pair: {', '.join(f'{r:.2f}' for r in share)}); the cap was hit "
            f"before the exit was answered in {hits} of {repetitions}",
            "<= 1.1x (issue 10)",
            statistics.median(share) <= 1.1,
        ),
        Figure(
            NAME,
            "the same 200 MB / a plain shell `> file`: capped, and uncapped (starting and waiting alone)",
            f"{against_shell:.2f}x and {plain:.2f}x (medians: capped, uncapped, shell: {times}; start to exit)",
        ),
    ]


async def _many_writers(seconds: float) -> Figure:
    """Ten `yes` under 1 MiB caps at once: the worst disk use of any of them, in caps."""
    async with serve() as server:
        logs = []
        for _ in range(WRITERS):
            task = await server.call("run_background_task", command="yes", max_log_bytes=CAP)
            logs.append(Path(task["log_path"]))
        samples: list[int] = []
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            samples.extend(os.stat(log).st_blocks * 512 for log in logs)
            await anyio.sleep(SAMPLE_INTERVAL * 5)
        written = sum(os.stat(log).st_size for log in logs)
        for task in (await server.call("list_tasks"))["tasks"]:
            await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
            server.remove_log(task["task_id"])
    samples.sort()
    median, p99, peak = statistics.median(samples), samples[int(len(samples) * 0.99)], samples[-1]
    return Figure(
        NAME,
        f"{WRITERS} `yes` at once under 1 MiB caps: allocated / cap, {len(samples)} samples over {seconds:g} s",
        f"median {median / CAP:.2f}x, p99 {p99 / CAP:.2f}x, worst {peak / CAP:.2f}x; "
        f"{written / 1e9:.1f} GB written meanwhile",
        "holds (overshoot stated in docs/benchmarks.md)",
    )


SLOW_WRITER = "while :; do echo a line; sleep 0.01; done"
SLOW_THEN_FAST = "echo start; sleep 0.1; exec yes"


async def _server_cpu(server: Server, command: str, cap: int, seconds: float) -> tuple[float, int]:
    """The server's CPU seconds (its capping process's included) while ``command`` runs under
    ``cap`` for ``seconds``, and the most disk its log took meanwhile (sampled every SAMPLE_INTERVAL)."""
    task = await server.call("run_background_task", command=command, max_log_bytes=cap)
    log = Path(task["log_path"])
    cpu_before = server.cpu_seconds()
    peak, began = 0, time.monotonic()
    while time.monotonic() - began < seconds:
        peak = max(peak, os.stat(log).st_blocks * 512)
        await anyio.sleep(SAMPLE_INTERVAL)
    cpu = server.cpu_seconds() - cpu_before
    await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
    server.remove_log(task["task_id"])
    return cpu, peak


async def _bursts_and_slow_writers(seconds: float) -> list[Figure]:
    """A writer that starts slowly and then writes as fast as `yes` (the capper paces its looks on
    at least holes.BURST_BYTES_PER_SECOND, not on the first rate it saw); and what that floor
    costs: the server's CPU for a log written a line every 10 ms, under a 1 MiB cap (looked at
    every few ms) against a 4 GiB cap (every quarter second)."""
    async with serve() as server:
        _, peak = await _server_cpu(server, SLOW_THEN_FAST, CAP, seconds)
        small, _ = await _server_cpu(server, SLOW_WRITER, CAP, seconds)
        large, _ = await _server_cpu(server, SLOW_WRITER, UNCAPPED_BYTES, seconds)
    return [
        Figure(
            NAME,
            f"`{SLOW_THEN_FAST}` under a 1 MiB cap: peak allocated / cap over {seconds:g} s",
            f"{peak / CAP:.1f}x",
            "bounded (docs/benchmarks.md, 8)",
        ),
        Figure(
            NAME,
            f"server CPU for `{SLOW_WRITER}` under a 1 MiB cap, and under a 4 GiB cap, {seconds:g} s each",
            f"{small / seconds:.1%} vs {large / seconds:.1%} of a core",
        ),
    ]


async def measure(quick: bool) -> list[Figure]:
    seconds = 2.0 if quick else 5.0
    figures = [figure for cap in CAPS for figure in await _one(cap, seconds)]
    repetitions = 2 if quick else 5
    uncapped = await _write_time(UNCAPPED, repetitions)
    capped = await _write_time(None, repetitions)
    figures.append(
        Figure(
            NAME,
            f"1 GiB written under the default 64 MiB cap / under a 4 GiB cap, median of {repetitions}",
            f"{capped / uncapped:.2f}x ({capped:.2f} s vs {uncapped:.2f} s): dropping 960 MiB as it is written",
        )
    )
    for label, command in BURSTS.items():
        figures.extend(await _capped_write_against_shell(label, command, 5 if quick else 11))
    figures.append(await _many_writers(seconds))
    figures.extend(await _bursts_and_slow_writers(seconds))
    return figures


if __name__ == "__main__":
    main(measure)
