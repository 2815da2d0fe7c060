"""The server, with its cyclic garbage collections counted and timed by generation.

Run in place of the console script (``python bench/_gc_watch.py [server arguments]``): every
collection is timed through ``gc.callbacks``; at exit, per generation, the count, total and worst
time, and the objects the collector tracked at the last full collection, go to stderr.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import time

REPORT_MARK = "gc-watch:"
_began: list[float] = [0.0]
_times: dict[int, list[float]] = {0: [], 1: [], 2: []}
_tracked: list[int] = [0]


def _watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _began[0] = time.perf_counter()
        if info["generation"] == 2:
            _tracked[0] = len(gc.get_objects())
        return
    _times[info["generation"]].append(time.perf_counter() - _began[0])


def _report() -> None:
    for generation, times in _times.items():
        if times:
            print(
                f"{REPORT_MARK} gen {generation}: {len(times)} collections, total {sum(times) * 1000:.0f} ms, "
                f"worst {max(times) * 1000:.1f} ms",
                file=sys.stderr,
            )
    print(
        f"{REPORT_MARK} tracked at the last full collection: {_tracked[0]}; frozen: {gc.get_freeze_count()}",
        file=sys.stderr,
    )


def _census(*_: object) -> None:
    """On SIGUSR1: the most common types among the objects the collector tracks, on stderr."""
    import collections

    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    print(f"{REPORT_MARK} census {sum(counts.values())}: {counts.most_common(40)}", file=sys.stderr, flush=True)


if "GC_WATCH_THRESHOLD" in os.environ:
    gc.set_threshold(*(int(part) for part in os.environ["GC_WATCH_THRESHOLD"].split(",")))
gc.callbacks.append(_watch)
signal.signal(signal.SIGUSR1, _census)
atexit.register(_report)

from mcp_backgroundr.cli.main import main  # noqa: E402

raise SystemExit(main())
