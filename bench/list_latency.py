"""list_tasks with 100 running tasks, the scenario of the side-by-side run (bench/peers.py), where
desktop-commander answered in 4.8 ms and this server in 28 ms.

Timed through the SDK's ``Client.call_tool`` (which checks the answer against the tool's output
schema, as every SDK client does) and as a plain JSON round trip (the server's share alone), and
beside a bare MCPServer's one-tool call (the SDK's own floor).

    python bench/list_latency.py [--quick] [--baseline SRC] [--gap SECONDS] [--all]

``--baseline SRC``: also run the server from another checkout's ``src`` directory (e.g. main's,
``git archive main src | tar -x -C /tmp/base``) with the same tasks, alternate the calls
between the two, and report this tree's medians as a ratio to that one's: on a machine shared
with other work the ratio holds when the absolute figures do not.

``--gap SECONDS``: wait that long before each call, as the side-by-side run does (0.2 s there: a
model's calls are seconds apart). Back to back, the background work a call sets off (the socket
table is read again at most every 0.5 s) lands between calls less often than it does then.

``--all``: list with ``all=true``, as a client asks for every server's tasks: the registry is read
(and this machine's tasks of servers that died are looked for) on every call.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from _harness import Figure, Server, bare_server_command, main, median, ms, serve, timed

EVERYONE = "--all" in sys.argv[1:]
NAME = "list_tasks" + (" all=true" if EVERYONE else "") + ", 100 running tasks"
TASKS = 100
WARM_UP = 5
FASTEST_PEER = 0.0048
"""desktop-commander's list_sessions with 100 sessions, from the side-by-side run."""


def _option(name: str) -> str | None:
    arguments = sys.argv[1:]
    return arguments[arguments.index(name) + 1] if name in arguments else None


@contextlib.asynccontextmanager
async def _ready(source: str | None = None) -> AsyncIterator[Server]:
    """A server (from ``source``, a ``src`` directory, else the installed one) with TASKS running tasks."""
    command = [sys.executable, "-m", "mcp_backgroundr"] if source else None
    async with serve(command, env={"PYTHONPATH": source} if source else None) as server:
        for _ in range(TASKS):
            await server.call("run_background_task", command="sleep 600")
        for _ in range(WARM_UP):
            await _listing(server, raw=False)()
        yield server


def _listing(server: Server, raw: bool = True) -> Callable[[], Awaitable[dict[str, Any]]]:
    """One list call of this run (``raw``: answered as plain JSON, else through ``Client.call_tool``)."""
    call = server.call_raw if raw else server.call
    return functools.partial(call, "list_tasks", limit=TASKS, **({"all": True} if EVERYONE else {}))


def _cpu_seconds(server: Server) -> float:
    used = server.process().cpu_times()
    return used.user + used.system


async def _times(servers: list[Server], calls: int, raw: bool, gap: float) -> tuple[list[list[float]], list[float]]:
    """Seconds per call for each server, the servers' calls alternating (each ``gap`` seconds after
    the last), and each server's CPU seconds per call (less swayed by other work on the machine
    than the latency)."""
    seconds: list[list[float]] = [[] for _ in servers]
    cpu_before = [_cpu_seconds(server) for server in servers]
    for _ in range(calls):
        for server, times in zip(servers, seconds, strict=True):
            if gap:
                await anyio.sleep(gap)
            times.append(await timed(_listing(server, raw)))
    cpu = [(_cpu_seconds(server) - before) / calls for server, before in zip(servers, cpu_before, strict=True)]
    return seconds, cpu


async def _floor(ours: Server, calls: int, gap: float) -> Figure:
    """A bare MCPServer's one-tool call (``bare_server.py``: the official SDK's own transport and
    dispatch, nothing of ours), alternating with this tree's plain JSON list call: what no server
    built on the Python SDK answers faster than, on this machine at this moment."""
    async with serve(bare_server_command()) as bare:
        listed: list[float] = []
        echoed: list[float] = []
        for _ in range(calls):
            for times, call in (
                (listed, _listing(ours)),
                (echoed, functools.partial(bare.call_raw, "echo", text="x")),
            ):
                if gap:
                    await anyio.sleep(gap)
                times.append(await timed(call))
    value = f"{ms(median(echoed))}; this tree's list {ms(median(listed))} ({median(listed) / median(echoed):.2f}x it)"
    return Figure(NAME, "a bare MCPServer's echo call, plain JSON, alternating with the list (the SDK's floor)", value)


async def measure(quick: bool) -> list[Figure]:
    calls = 30 if quick else 100
    baseline = _option("--baseline")
    gap = float(_option("--gap") or 0)
    spaced = f", {gap:g} s apart" if gap else ""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(_ready())]
        if baseline:
            servers.append(await stack.enter_async_context(_ready(baseline)))
        checked, _ = await _times(servers, calls, raw=False, gap=gap)
        raw, cpu = await _times(servers, calls, raw=True, gap=gap)
        floor = await _floor(servers[0], calls, gap)
    figures = [
        Figure(
            NAME,
            f"through Client.call_tool (schema-checked), median of {calls}{spaced}",
            f"{ms(median(checked[0]))} (max {ms(max(checked[0]))})",
            f"<= {ms(FASTEST_PEER)} (desktop-commander)",
            median(checked[0]) <= FASTEST_PEER,
        ),
        Figure(NAME, f"plain JSON round trip (server's share), median of {calls}{spaced}", ms(median(raw[0]))),
        Figure(NAME, "server CPU per plain JSON call", ms(cpu[0])),
        floor,
    ]
    if baseline:
        for how, times in (("through Client.call_tool", checked), ("plain JSON round trip", raw)):
            ratio = median(times[0]) / median(times[1])
            value = f"{ratio:.2f}x ({ms(median(times[0]))} against {ms(median(times[1]))})"
            figures.append(Figure(NAME, f"{how}: this tree / --baseline, calls alternating", value))
        value = f"{cpu[0] / cpu[1]:.2f}x ({ms(cpu[0])} against {ms(cpu[1])})"
        figures.append(Figure(NAME, "server CPU per plain JSON call: this tree / --baseline", value))
    return figures


if __name__ == "__main__":
    main(measure)
