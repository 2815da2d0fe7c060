"""Where a list_tasks call with 100 running tasks spends its time, stage by stage, on both sides.

    python bench/list_stages.py [--quick] [--baseline SRC] [--gap SECONDS]

The server runs as ``_list_stages_server.py`` (the console script with each stage of a list answer
timed: the core's listing, the text, the rows, the SDK's three walks of the answer); this process,
the SDK's client, times its parse of the answer's line and its check of the structured content
against the output schema. Each figure is the median over the calls of that stage's time in one
call, so the stages of this tree can be set beside those of ``--baseline SRC`` (another checkout's
``src``, as in ``list_latency.py``), the two servers' calls alternating.

``--gap SECONDS`` (default 0.2, as the side-by-side run): the wait before each call. Spaced
calls find the caches cold, and every stage takes two to three times what it takes back to back.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types
from _harness import BENCH_DIR, Figure, Server, main, median, serve, timed
from mcp.client.session import ClientSession

NAME = "list_tasks stages, 100 running tasks"
TASKS = 100
WARM_UP = 5
COMMAND = "env BENCH_PEERS_MARK=0f3a4c1e-8a7d-4b7e-9b1e-2f5d6c7a8b9c sh -c 'sleep 300'"
"""What the side-by-side run starts (a marker in each task's environment)."""
ORDER = (
    "the call, through Client.call_tool",
    "ours: the core's listing",
    "ours: the text",
    "ours: the rows, the answer",
    "SDK: dump of the answer",
    "SDK: per-version check and dump",
    "SDK: JSON line",
    "client: parse of the line",
    "client: check against the output schema",
)
"""The stages in a call's order."""
BIG_LINE = 10_000
"""An answer line at least this long is a list of the 100 (the client's parse is timed for those)."""

_client_stages: dict[str, list[float]] = defaultdict(list)
"""The client's stage times of the call under way (this process serves one call at a time)."""


def _option(name: str) -> str | None:
    arguments = sys.argv[1:]
    return arguments[arguments.index(name) + 1] if name in arguments else None


class _TimedAdapter:
    """The SDK's JSON-RPC message adapter, its parse of a long line timed."""

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    def validate_json(self, line: str | bytes, **options: Any) -> Any:
        started = time.perf_counter()
        message = self._adapter.validate_json(line, **options)
        if len(line) >= BIG_LINE:
            _client_stages["client: parse of the line"].append(time.perf_counter() - started)
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


def _time_the_client() -> None:
    checked = ClientSession.validate_tool_result

    async def validate_tool_result(self: ClientSession, name: str, result: mcp_types.CallToolResult) -> None:
        started = time.perf_counter()
        await checked(self, name, result)
        _client_stages["client: check against the output schema"].append(time.perf_counter() - started)

    ClientSession.validate_tool_result = validate_tool_result  # type: ignore[method-assign]
    mcp_types.jsonrpc_message_adapter = _TimedAdapter(mcp_types.jsonrpc_message_adapter)  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def _ready(stages: Path, source: str | None = None) -> AsyncIterator[Server]:
    """A server (from ``source``, a ``src`` directory, else the installed package) that times its
    stages into ``stages``, with TASKS running tasks."""
    env = {"LIST_STAGES_FILE": str(stages), **({"PYTHONPATH": source} if source else {})}
    async with serve([sys.executable, str(BENCH_DIR / "_list_stages_server.py")], env=env) as server:
        for _ in range(TASKS):
            await server.call("run_background_task", command=COMMAND)
        for _ in range(WARM_UP):
            await server.call("list_tasks", limit=TASKS)
        yield server


def _server_stages(stages: Path, skipped: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for line in stages.read_text().splitlines()[skipped:]:
        stage, _, seconds = line.rpartition(" ")
        found[stage].append(float(seconds))
    return found


async def _calls(servers: list[Server], calls: int, gap: float) -> list[dict[str, list[float]]]:
    """Each server's calls (``gap`` apart, the servers in turn): the whole call and the client's stages."""
    seen: list[dict[str, list[float]]] = [defaultdict(list) for _ in servers]
    for _ in range(calls):
        for server, stages in zip(servers, seen, strict=True):
            await anyio.sleep(gap)
            _client_stages.clear()
            call: Callable[[], Awaitable[object]] = functools.partial(server.call, "list_tasks", limit=TASKS)
            stages["the call, through Client.call_tool"].append(await timed(call))
            for stage, times in _client_stages.items():
                stages[stage] += times
    return seen


async def measure(quick: bool) -> list[Figure]:
    calls = 30 if quick else 100
    baseline = _option("--baseline")
    gap = float(_option("--gap") or 0.2)
    _time_the_client()
    with tempfile.TemporaryDirectory(prefix="bench-list-stages-") as tmp:
        files = [Path(tmp) / "ours.stages", Path(tmp) / "baseline.stages"][: 2 if baseline else 1]
        async with contextlib.AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(_ready(files[0]))]
            if baseline:
                servers.append(await stack.enter_async_context(_ready(files[1], baseline)))
            skipped = [len(path.read_text().splitlines()) for path in files]
            seen = await _calls(servers, calls, gap)
            for stages, path, skip in zip(seen, files, skipped, strict=True):
                stages.update(_server_stages(path, skip))
    return _figures(seen, calls, gap)


def _figures(seen: list[dict[str, list[float]]], calls: int, gap: float) -> list[Figure]:
    figures = []
    for stage in ORDER:
        timed_here = [f"{median(times[stage]) * 1000:.3f} ms" if times.get(stage) else "--" for times in seen]
        value = timed_here[0] + (f" (--baseline {timed_here[1]})" if len(seen) > 1 else "")
        figures.append(Figure(NAME, f"{stage}, median of {calls}, {gap:g} s apart", value))
    return figures


if __name__ == "__main__":
    main(measure)
