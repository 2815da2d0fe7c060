"""The server, with every event-loop callback that holds the loop longer than a threshold recorded.

Run in place of the console script (``python bench/_loop_watch.py [server arguments]``): each
callback the asyncio loop runs is timed, and at exit the slow ones are summed up on stderr, by
what they ran (a task's coroutine, or a plain callback), with count, total and worst time.
Timing a callback costs two clock reads, far less than asyncio's debug mode, which records a
traceback at every ``call_soon``.

    LOOP_WATCH_MS=20 (the threshold)
    LOOP_WATCH_FILE=PATH (append each slow callback there as it happens, with the server's pid and
    arguments, instead of a summary on stderr at exit: for watching every server a test suite
    starts, however it ends)

Each slow callback's CPU time is kept beside its wall time: a callback that waited on a blocking
call (a disk, a lock) shows far less CPU than wall time; one that computed shows about as much
(on a busy machine a callback descheduled midway shows less CPU too, so read what repeats).
"""

from __future__ import annotations

import asyncio.events
import atexit
import os
import re
import sys
import time
from collections import defaultdict

THRESHOLD = float(os.environ.get("LOOP_WATCH_MS", "20")) / 1000
REPORT_MARK = "loop-watch:"
_FILE = os.environ.get("LOOP_WATCH_FILE")
AWAIT_DEPTH = 4
MAX_CHAIN = 50
_slow: dict[str, list[tuple[float, float]]] = defaultdict(list)
_run = asyncio.events.Handle._run
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _what(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return "task " + " > ".join(_awaiting(owner.get_coro())[-AWAIT_DEPTH:])
    return _ADDRESS.sub("", repr(callback))[:160]


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines a task is suspended in, outermost first: where its last step ended."""
    chain: list[str] = []
    while coro is not None and len(chain) < MAX_CHAIN:
        name = getattr(coro, "__qualname__", None)
        if name is not None:
            chain.append(str(name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return chain


def _timed_run(handle: asyncio.events.Handle) -> None:
    began, began_cpu = time.perf_counter(), time.thread_time()
    _run(handle)
    took = time.perf_counter() - began
    if took >= THRESHOLD:
        cpu = time.thread_time() - began_cpu
        _slow[_what(handle)].append((took, cpu))
        if _FILE is not None:
            line = f"{os.getpid()} {sys.argv[1:]} {took * 1000:.0f} ms (CPU {cpu * 1000:.0f} ms): {_what(handle)}"
            with open(_FILE, "a") as out:
                out.write(line + "\n")


def _report() -> None:
    ordered = sorted(_slow.items(), key=lambda item: -sum(wall for wall, _ in item[1]))
    lines = [f"{REPORT_MARK} {sum(map(len, _slow.values()))} callbacks over {THRESHOLD * 1000:g} ms: {sys.argv[1:]}"]
    for what, times in ordered[:15]:
        walls, cpus = [wall for wall, _ in times], [cpu for _, cpu in times]
        lines.append(
            f"{REPORT_MARK} {len(times)}x total {sum(walls) * 1000:.0f} ms (CPU {sum(cpus) * 1000:.0f} ms) "
            f"worst {max(walls) * 1000:.0f} ms: {what}"
        )
    if _FILE is None:
        print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    setattr(asyncio.events.Handle, "_run", _timed_run)  # noqa: B010 (a method replaced on the class)
    atexit.register(_report)
    from mcp_backgroundr.cli.main import main

    sys.exit(main(sys.argv[1:]))
