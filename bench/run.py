"""Run every benchmark against the installed server and print one table.

    python bench/run.py [--quick] [--only MODULE ...]

Each benchmark gets a bounded time; the table is Markdown, and a JSON copy goes to
bench/results/ (ignored by git).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from importlib import import_module
from pathlib import Path

import anyio
import psutil
from _harness import BENCH_DIR, Figure, Measure, print_table, server_command

import mcp_backgroundr

MODULES = (
    "tool_list_size",
    "write_throughput",
    "write_memory",
    "status_latency",
    "many_tasks",
    "scale",
    "startup",
    "shutdown",
    "wait_latency",
    "idle_waits",
    "flood",
    "log_cap",
    "caps_without_server",
    "containment",
    "list_latency",
    "http_latency",
    "stall",
    "big_arguments",
    "pattern_compile",
    "remote",
    "platforms",
)
BENCHMARK_TIMEOUT = 900.0


def server_under_test() -> str:
    package = Path(mcp_backgroundr.__file__).parent
    return f"server: {server_command()[0]} (mcp-backgroundr {mcp_backgroundr.__version__} from {package})"


def machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )


async def run_all(modules: list[str], quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    for name in modules:
        measure: Measure = import_module(name).measure
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with anyio.fail_after(BENCHMARK_TIMEOUT):
            figures += await measure(quick)
        print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    parser.add_argument("--only", nargs="+", choices=MODULES, default=list(MODULES), metavar="MODULE")
    args = parser.parse_args()

    async def run() -> list[Figure]:
        return await run_all(args.only, args.quick)

    figures = anyio.run(run)
    print(f"{machine()}{' (--quick)' if args.quick else ''}\n{server_under_test()}\n")
    print_table(figures)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    out = results / time.strftime("%Y%m%d-%H%M%S.json")
    record = {
        "machine": machine(),
        "server": server_under_test(),
        "quick": args.quick,
        "figures": [dataclasses.asdict(f) for f in figures],
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"\n(also written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
