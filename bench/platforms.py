"""What portability costs: the portable platform backend beside the linux one, in one run.

Three servers run side by side: linux (the strongest containment here: cgroup as root), linux
at the marker level, and portable (which contains at the marker level); calls alternate between
them. The portable figures are given as ratios to linux at the same level, which isolates what
the platform costs from what the containment level costs (a marker-level scan of the machine's
processes against a cgroup's member list). Figures where the backends differ:

- start latency: ``run_background_task`` of ``true``, from the call to its answer;
- wait wake-up for an exit, and for a line matching a pattern: from the timestamp the child
  prints to the answer in the client's hands (see wait_latency.py);
- idle CPU of the server with ``IDLE_TASKS`` sleeping tasks (capped logs: the portable
  backend looks at each quiet log; the linux one is told by inotify);
- cap overshoot: the disk a ``yes`` task's log takes under a 1 MiB cap, sampled;
- capture throughput: a 200 MB write from the call that starts it to the answer of a
  ``wait_for_task`` for its exit, under a cap it does not reach and under one it passes three
  times (the portable backend rewrites the kept quarter where linux punches a hole).

"""

from __future__ import annotations

import contextlib
import time

import anyio
from _harness import Figure, Server, main, median, ms, serve
from wait_latency import CASES, _one

from mcp_backgroundr.config import CONTAINMENT_ENV, PLATFORM_ENV

LINUX, LINUX_MARKER, PORTABLE = "linux", "linux (marker level)", "portable"
SERVERS = {
    LINUX: {PLATFORM_ENV: "linux"},
    LINUX_MARKER: {PLATFORM_ENV: "linux", CONTAINMENT_ENV: "marker"},
    PORTABLE: {PLATFORM_ENV: "portable"},
}
"""The portable backend contains at the marker level: linux at that level too isolates the platform's cost."""
IDLE_TASKS = 300
IDLE_SECONDS = 10.0
CAP = 1 << 20
CAP_SECONDS = 3.0
CAP_SAMPLE_SECONDS = 0.01
WRITE_BYTES = 200_000_000
WRITE = f"head -c {WRITE_BYTES} /dev/zero"
WRITE_CAPS = {"capture, cap not reached": 1 << 30, "capture, 64 MiB cap": 64 << 20}
WRITE_LIMIT_SECONDS = 120.0


async def _start_latency(server: Server) -> float:
    started = time.perf_counter()
    task = await server.start("true")
    took = time.perf_counter() - started
    await server.wait_exit(task["task_id"], 10)
    await server.call("remove_task", task_id=task["task_id"])
    return took


async def _idle_cpu(server: Server, tasks: int, seconds: float) -> float:
    """CPU seconds per second the server (and its capping process) uses while ``tasks`` sleeping tasks run."""
    started = [await server.start("sleep 600") for _ in range(tasks)]
    await anyio.sleep(1.0)  # the starts' own work is done
    before = server.cpu_seconds()
    await anyio.sleep(seconds)
    used = server.cpu_seconds() - before
    for task in started:
        await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
    return used / seconds


async def _cap_overshoot(server: Server) -> float:
    """Median disk a ``yes`` log takes under a 1 MiB cap, as a multiple of the cap."""
    task = await server.call("run_background_task", command="yes", max_log_bytes=CAP)
    log = server.home / "logs" / f"{task['task_id']}.log"
    samples = []
    deadline = time.monotonic() + CAP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            samples.append(log.stat().st_blocks * 512 / CAP)
        await anyio.sleep(CAP_SAMPLE_SECONDS)
    await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
    return median(samples)


async def _capture(server: Server, cap: int) -> float:
    """Seconds from the call that starts a 200 MB write to the answer that it exited."""
    started = time.perf_counter()
    task = await server.call("run_background_task", command=WRITE, max_log_bytes=cap)
    await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=WRITE_LIMIT_SECONDS)
    took = time.perf_counter() - started
    await server.call("remove_task", task_id=task["task_id"])
    return took


async def measure(quick: bool) -> list[Figure]:
    runs = 10 if quick else 40
    idle_tasks = 50 if quick else IDLE_TASKS
    results: dict[str, dict[str, list[float]]] = {name: {} for name in SERVERS}
    async with contextlib.AsyncExitStack() as stack:
        servers = {name: await stack.enter_async_context(serve(env=env)) for name, env in SERVERS.items()}
        for _ in range(runs):
            for name, server in servers.items():
                results[name].setdefault("start", []).append(await _start_latency(server))
                for case, (command, pattern) in CASES.items():
                    results[name].setdefault(f"wake-up ({case})", []).append(await _one(server, command, pattern))
        for _ in range(2 if quick else 5):
            for name, server in servers.items():
                for figure, cap in WRITE_CAPS.items():
                    results[name].setdefault(figure, []).append(await _capture(server, cap))
        for name, server in servers.items():
            results[name]["cap overshoot"] = [await _cap_overshoot(server)]
            results[name]["idle CPU"] = [await _idle_cpu(server, idle_tasks, IDLE_SECONDS)]
    figures = []
    for figure in results[PORTABLE]:
        portable, same_level = median(results[PORTABLE][figure]), median(results[LINUX_MARKER][figure])
        ratio = f"{portable / same_level:.2f}x" if same_level else "n/a"
        shown = ", ".join(f"{name} {_shown(figure, median(results[name][figure]))}" for name in SERVERS)
        value = f"portable {ratio} linux at the same (marker) level; {shown}"
        figures.append(Figure("platform backends", _describe(figure, runs, idle_tasks), value))
    return figures


def _describe(figure: str, runs: int, idle_tasks: int) -> str:
    if figure == "idle CPU":
        return f"server CPU while {idle_tasks} tasks sleep ({IDLE_SECONDS:g} s)"
    if figure == "cap overshoot":
        return f"disk of a `yes` log under a 1 MiB cap, median of samples over {CAP_SECONDS:g} s"
    if figure in WRITE_CAPS:
        return f"{figure}: {WRITE_BYTES // 1_000_000} MB written, start call to exit answered, median, alternating"
    return f"{figure}: median of {runs} runs each, alternating"


def _shown(figure: str, value: float) -> str:
    if figure == "idle CPU":
        return f"{value * 100:.2f} % of a core"
    if figure == "cap overshoot":
        return f"{value:.2f}x the cap"
    return ms(value)


if __name__ == "__main__":
    main(measure)
