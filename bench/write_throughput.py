"""A task writing 1 GiB under the server vs the same command redirected to a file by a plain shell.

Both sides run the same script, which times itself around the write::

    s=$(date +%s%N); head -c 1073741824 /dev/zero; e=$(date +%s%N); printf '\\nelapsed_ns=%s\\n' ...

Under the server its stdout is the task's log; the baseline runs it as
``sh -c '{ SCRIPT; } > file'`` from this process, in the same directory. Two figures per side:

- in-task: the time the script measured around ``head`` (the write path alone);
- end to end: for the server, from the run_background_task call until the server reports the
  exit; for the shell, from spawning ``sh`` until it is reaped.

The server's report of the exit is awaited in up to three ways, each a side of its own:

- polled: get_task_status (lines=0) every 10 ms, as a client without a wait tool must. On
  2 cores the polling (client and server) competes with the writer, so this measures that too;
- pidfd: this process waits on the task's pidfd, then calls get_task_status (again every 10 ms,
  in practice once) until it reports the exit. No load during the write;
- wait_for_task: one call of the server's wait tool, when the server has one.

Sides rotate order every repetition; each big file is deleted right after its run. Each figure
is given two ways: the ratio of the medians, and the median of the per-repetition ratios (each
side's run against the shell run of the same repetition, seconds apart). This machine's speed
drifts in phases lasting several runs, which the second cancels and the first does not; the
target counts as met only when both are within it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
from _harness import GIB, UNCAPPED, Figure, Server, main, median, serve

NAME = "1 GiB write"
TARGET = 1.1
RUN_TIMEOUT = 120.0
SCRIPT = f"s=$(date +%s%N); head -c {GIB} /dev/zero; e=$(date +%s%N); printf '\\nelapsed_ns=%s\\n' $((e - s))"
POLLED, PIDFD, WAIT = "server, polled every 10 ms", "server, pidfd then get_task_status", "server, wait_for_task"
SHELL = "plain shell"
_ELAPSED = re.compile(r"elapsed_ns=(\d+)\s*$")


@dataclass
class Run:
    wall: float
    """End to end seconds."""
    in_task: float
    """Seconds the script measured around the write."""
    server_cpu: float = 0.0
    """CPU seconds the server process used meanwhile."""


def _elapsed(text: str) -> float:
    found = _ELAPSED.search(text)
    if found is None:
        raise RuntimeError(f"no elapsed_ns trailer in {text[-200:]!r}")
    return int(found.group(1)) / 1e9


async def _wait_pidfd(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        with anyio.fail_after(RUN_TIMEOUT):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def _under_server(server: Server, process: psutil.Process, observe: str) -> Run:
    cpu = process.cpu_times()
    started = time.perf_counter()
    task = await server.start(SCRIPT)
    if observe == WAIT:
        waited = await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=RUN_TIMEOUT)
        status = waited["status"]
    else:
        if observe == PIDFD:
            await _wait_pidfd(task["pid"])
        status = await server.wait_exit(task["task_id"], RUN_TIMEOUT)
    wall = time.perf_counter() - started
    cpu_after = process.cpu_times()
    if status["state"] != "completed":
        raise RuntimeError(f"the 1 GiB task ended {status['state']}: {status}")
    tail = await server.call("get_task_status", task_id=task["task_id"], lines=1)
    server.remove_log(task["task_id"])
    server_cpu = cpu_after.user + cpu_after.system - cpu.user - cpu.system
    return Run(wall, _elapsed(tail["output"]), server_cpu)


async def _plain_shell(directory: Path) -> Run:
    target = directory / "plain-shell.out"
    argv = ["sh", "-c", f"{{ {SCRIPT}; }} > {shlex.quote(str(target))}"]

    def run() -> float:
        started = time.perf_counter()
        subprocess.run(argv, check=True, timeout=RUN_TIMEOUT)
        return time.perf_counter() - started

    wall = await anyio.to_thread.run_sync(run)
    with target.open("rb") as out:
        out.seek(-64, os.SEEK_END)
        tail = out.read().decode()
    target.unlink()
    return Run(wall, _elapsed(tail))


def _figure(side: str, wall: bool, runs: dict[str, list[Run]]) -> Figure:
    def seconds(run: Run) -> float:
        return run.wall if wall else run.in_task

    ours, shell = [seconds(r) for r in runs[side]], [seconds(r) for r in runs[SHELL]]
    of_medians = median(ours) / median(shell)
    paired = median([a / b for a, b in zip(ours, shell, strict=True)])
    each = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(ours, shell, strict=True))
    cpu = f"; server CPU meanwhile {median([r.server_cpu for r in runs[side]]):.2f} s" if wall else ""
    return Figure(
        NAME,
        f"{'end to end' if wall else 'in-task'}: {side} / {SHELL}, {len(ours)} repetitions",
        f"{of_medians:.3f}x ratio of medians ({median(ours):.3f} s vs {median(shell):.3f} s), "
        f"{paired:.3f}x median of per-repetition ratios (each run, s: {each}{cpu})",
        f"<= {TARGET}x (both)",
        of_medians <= TARGET and paired <= TARGET,
    )


async def measure(quick: bool) -> list[Figure]:
    repetitions = 2 if quick else 11
    async with serve(env=UNCAPPED) as server:
        has_wait = any(tool.name == "wait_for_task" for tool in (await server.client.list_tools()).tools)
        sides = [POLLED, PIDFD, WAIT, SHELL] if has_wait else [POLLED, PIDFD, SHELL]
        runs: dict[str, list[Run]] = {side: [] for side in sides}
        process = server.process()
        await server.wait_exit((await server.start("true"))["task_id"], RUN_TIMEOUT)  # warm up
        for rep in range(repetitions):
            shift = rep % len(sides)
            for side in sides[shift:] + sides[:shift]:
                if side == SHELL:
                    runs[side].append(await _plain_shell(server.home))
                else:
                    runs[side].append(await _under_server(server, process, side))
    return [_figure(side, wall, runs) for side in sides if side != SHELL for wall in (True, False)]


if __name__ == "__main__":
    main(measure)
