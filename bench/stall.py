"""What slow calls cost everybody else: list_tasks and get_task_status latency while the server
is kept busy, as a ratio to the same calls on the same server idle.

The load, all at once: a wait scanning a 1 GiB log from cursor 0 (repeated), a hostile pattern
(``(a+)+$`` against a line of 60 ``a`` and a ``b``, as grep, repeated), ten writers at full speed
under 1 MiB caps (``yes``, its session and itself at nice 19 so that what is measured is the
server's event loop, not two cores shared with ten busy writers), status of a task with 300 processes (repeated), and
1,000 extra idle processes on the machine. Target (issue 10): p99 within 50 ms of idle.

    python bench/stall.py [--quick]     (STALL_ONLY=writers,idle,...: some loads only; STALL_VERBOSE=1;
                                         STALL_SOURCE=DIR: the server from another checkout's src)

Finding what holds the event loop: ``STALL_WATCH=1`` runs the server through
``bench/_loop_watch.py`` and prints the loop callbacks over 20 ms (``LOOP_WATCH_MS``) by what
they ran; ``STALL_SPLIT=1`` splits each probe call's time into to the server, in the server
and back to the client (``bench/_call_split.py``); ``STALL_PROFILE=FILE`` records the server
with ``py-spy record`` (raw format, every thread) while the loaded calls run, with the further
py-spy options in ``STALL_PROFILE_ARGS`` (``--gil``: only the thread holding the interpreter
lock, to see who keeps the event loop from it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from _harness import GIB, Figure, Server, main, ms, serve

NAME = "stall: concurrent calls under load"
TARGET = "p99 within 50 ms of idle"
P99_MARGIN = 0.050
HOSTILE = "(a+)+$"
WRITERS = 10
WRITER_CAP = 1024 * 1024
WRITER = os.environ.get("STALL_WRITER", "(echo 19 > /proc/self/autogroup) 2>/dev/null; exec nice -n 19 yes")
"""A writer below everything else: a task leads its own session, which Linux schedules as one
group (autogroups), so a process's own nice value counts only inside it: the session's nice is
set too (docs/benchmarks.md, 15). STALL_WRITER replaces it (the old ``exec nice -n 19 yes``)."""
TREE_SIZE = 300
IDLE_PROCESSES = 1000
BIG_LOG_CAP = 2 * GIB
VERBOSE = bool(os.environ.get("STALL_VERBOSE"))
"""Print each call's time on stderr."""
WATCH = bool(os.environ.get("STALL_WATCH"))
PROFILE = os.environ.get("STALL_PROFILE")
PROFILE_ARGS = os.environ.get("STALL_PROFILE_ARGS", "").split()
SOURCE = os.environ.get("STALL_SOURCE")
"""Run the server from this ``src`` directory (another checkout's, for a before/after) instead of the installed one."""
ONLY = os.environ.get("STALL_ONLY")
"""Comma-separated words: only the loads whose names hold one (writers, idle, hostile, processes, GiB)."""
SPLIT = bool(os.environ.get("STALL_SPLIT"))
"""Split each probe call's time into to the server, in it, and back (``bench/_call_split.py``)."""
_probe_calls: list[tuple[str, float, float]] = []
"""Each probe call while SPLIT: its tool, and when it began and ended (CLOCK_MONOTONIC)."""


def _wanted(load: str) -> bool:
    return not ONLY or any(word in load for word in ONLY.split(","))


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1]


async def _latencies(server: Server, probe: str, calls: int) -> dict[str, list[float]]:
    """``calls`` sequential list_tasks and get_task_status calls, each timed."""
    found: dict[str, list[float]] = {"list_tasks": [], "get_task_status": []}
    for _ in range(calls):
        for tool, arguments in (("list_tasks", {}), ("get_task_status", {"task_id": probe, "lines": 10})):
            began, began_monotonic = time.perf_counter(), time.monotonic()
            await server.call(tool, **arguments)
            found[tool].append(time.perf_counter() - began)
            if SPLIT:
                _probe_calls.append((tool, began_monotonic, time.monotonic()))
            if VERBOSE:
                print(f"  probe {tool}: {found[tool][-1] * 1000:.1f} ms", file=sys.stderr)
    return found


@contextlib.contextmanager
def _idle_processes(count: int) -> Iterator[None]:
    """``count`` sleeping processes outside the server, for as long as the block runs."""
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
    try:
        yield
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        for sleeper in sleepers:
            sleeper.wait()


async def _repeat(server: Server, label: str, arguments: dict[str, Any], counts: dict[str, int]) -> None:
    tool = label.split()[0]
    while True:
        began = time.perf_counter()
        try:
            await server.call(tool, **arguments)
        except Exception as exc:  # a figure, not a crash: a slow call that timed out is counted as such
            failed = f"{label} failed ({type(exc).__name__})"
            counts[failed] = counts.get(failed, 0) + 1
            continue
        counts[label] = counts.get(label, 0) + 1
        if VERBOSE:
            print(f"{label}: {time.perf_counter() - began:.2f} s", file=sys.stderr)


async def _setup_load(server: Server) -> dict[str, dict[str, Any]]:
    """Start the tasks the slow calls need; answer the calls to repeat."""
    big = await server.call("run_background_task", command=f"yes 123456789 | head -c {GIB}", max_log_bytes=BIG_LOG_CAP)
    hostile = await server.call("run_background_task", command=f"printf '{'a' * 60}b\\n'")
    tree = await server.call(
        "run_background_task",
        command=f"for i in $(seq {TREE_SIZE}); do sleep 600 & done; echo started; wait",
        wait_for_pattern="^started",
    )
    await server.call("wait_for_task", task_id=big["task_id"], timeout_seconds=120)
    for _ in range(WRITERS if _wanted("writers") else 0):
        await server.call("run_background_task", command=WRITER, max_log_bytes=WRITER_CAP)
    return {
        "wait_for_task (1 GiB from 0)": {
            "task_id": big["task_id"],
            "since": 0,
            "output_pattern": "never matches",
            "timeout_seconds": 30,
        },
        "get_task_status (hostile grep)": {"task_id": hostile["task_id"], "grep": HOSTILE},
        f"get_task_status ({TREE_SIZE} processes)": {"task_id": tree["task_id"], "lines": 10},
    }


@contextlib.contextmanager
def _profiled(server: Server) -> Iterator[None]:
    """py-spy recording the server for as long as the block runs, when STALL_PROFILE names a file."""
    if not PROFILE:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    rate = [] if "--rate" in PROFILE_ARGS else ["--rate", "100"]
    command = [str(spy), "record", "--pid", str(server.process().pid), *rate, "--format", "raw"]
    recorder = subprocess.Popen([*command, "--threads", *PROFILE_ARGS, "--output", PROFILE], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)


async def _loaded(server: Server, probe: str, calls: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    slow_calls = await _setup_load(server)
    counts: dict[str, int] = {}
    with _idle_processes(IDLE_PROCESSES if _wanted("idle") else 0), _profiled(server):
        async with anyio.create_task_group() as group:
            for tool, arguments in slow_calls.items():
                if _wanted(tool):
                    group.start_soon(_repeat, server, tool, arguments, counts)
            await anyio.sleep(1.0)  # the load under way
            found = await _latencies(server, probe, calls)
            group.cancel_scope.cancel()
    return found, counts


def _figures(idle: dict[str, list[float]], loaded: dict[str, list[float]], counts: dict[str, int]) -> list[Figure]:
    figures = []
    for tool in idle:
        i_med, i_p99, i_max = _percentiles(idle[tool])
        l_med, l_p99, l_max = _percentiles(loaded[tool])
        figures.append(
            Figure(
                NAME,
                f"{tool}: loaded / idle, {len(loaded[tool])} calls",
                f"median {l_med / i_med:.1f}x ({ms(l_med)} vs {ms(i_med)}), p99 {l_p99 / i_p99:.1f}x "
                f"({ms(l_p99)} vs {ms(i_p99)}), max {ms(l_max)} vs {ms(i_max)}",
                TARGET,
                l_p99 - i_p99 <= P99_MARGIN,
            )
        )
    done = ", ".join(f"{tool} x{count}" for tool, count in sorted(counts.items()))
    figures.append(Figure(NAME, "slow calls answered meanwhile", done or "none"))
    return figures


async def measure(quick: bool) -> list[Figure]:
    calls = 50 if quick else 200
    command = [sys.executable, str(Path(__file__).with_name("_loop_watch.py"))] if WATCH else None
    if SOURCE and not WATCH:
        command = [sys.executable, "-m", "mcp_backgroundr"]
    env = {"PYTHONPATH": SOURCE} if SOURCE else {}
    split_file = Path(tempfile.mkstemp(prefix="stall-split-")[1])
    if SPLIT:
        command = [sys.executable, str(Path(__file__).with_name("_call_split.py"))]
        env["CALL_SPLIT_FILE"] = str(split_file)
    async with serve(command, env=env) as server:
        probe = await server.call("run_background_task", command="echo probe; sleep 600")
        await _latencies(server, probe["task_id"], 10)  # warm up
        idle = await _latencies(server, probe["task_id"], calls)
        loaded, counts = await _loaded(server, probe["task_id"], calls)
        for task in (await server.call("list_tasks", limit=1000))["tasks"]:
            await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
            server.remove_log(task["task_id"])
    if WATCH and server.closing:
        print("\n".join(line for line in server.closing.server_log.splitlines() if "loop-watch:" in line))
    figures = _figures(idle, loaded, counts)
    if SPLIT:
        figures += _split(split_file.read_text().splitlines(), probe["task_id"], calls)
    split_file.unlink()
    return figures


def _split(events: list[str], probe: str, calls: int) -> list[Figure]:
    """Each probe call's time to the server, in it and back, as percentiles (idle, then loaded)."""
    reads: list[tuple[float, str, str]] = []
    written: dict[str, float] = {}
    for event in events:
        kind, moment, request, *rest = event.split()
        if kind == "R":
            reads.append((float(moment), request, " ".join(rest)))
        else:
            written.setdefault(request, float(moment))
    parts: list[tuple[float, float, float]] = []
    for tool, began, ended in _probe_calls:
        wanted = f"{tool} {'None' if tool == 'list_tasks' else probe}"
        read, request = next((moment, request) for moment, request, what in reads if moment >= began and what == wanted)
        parts.append((read - began, written[request] - read, ended - written[request]))
    figures = []
    for phase, chosen in (("idle", parts[20 : 20 + 2 * calls]), ("loaded", parts[20 + 2 * calls :])):
        shown = []
        for index, name in enumerate(("to the server", "in the server", "back to the client")):
            median, p99, worst = _percentiles([part[index] for part in chosen])
            shown.append(f"{name} median {ms(median)}, p99 {ms(p99)}, max {ms(worst)}")
        figures.append(Figure(NAME, f"probe calls {phase}, split ({len(chosen)} calls)", "; ".join(shown)))
    return figures


if __name__ == "__main__":
    main(measure)
