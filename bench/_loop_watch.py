"""The server, with every event-loop callback that holds the loop longer than a threshold recorded.

Run in place of the console script (``python bench/_loop_watch.py [server arguments]``): each
callback the asyncio loop runs is timed, and at exit the slow ones are summed up on stderr, by
what they ran (a task's coroutine, or a plain callback), with count, total and worst time.
Timing a callback costs two clock reads, far less than asyncio's debug mode, which records a
traceback at every ``call_soon``.

    LOOP_WATCH_MS=20 (the threshold)
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
AWAIT_DEPTH = 4
MAX_CHAIN = 50
_slow: dict[str, list[float]] = defaultdict(list)
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
    began = time.perf_counter()
    _run(handle)
    took = time.perf_counter() - began
    if took >= THRESHOLD:
        _slow[_what(handle)].append(took)


def _report() -> None:
    ordered = sorted(_slow.items(), key=lambda item: -sum(item[1]))
    print(f"{REPORT_MARK} {sum(map(len, _slow.values()))} callbacks over {THRESHOLD * 1000:g} ms", file=sys.stderr)
    for what, times in ordered[:15]:
        print(
            f"{REPORT_MARK} {len(times)}x total {sum(times) * 1000:.0f} ms worst {max(times) * 1000:.0f} ms: {what}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    setattr(asyncio.events.Handle, "_run", _timed_run)  # noqa: B010 (a method replaced on the class)
    atexit.register(_report)
    from mcp_backgroundr.cli.main import main

    sys.exit(main(sys.argv[1:]))
