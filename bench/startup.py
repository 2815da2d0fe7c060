"""Launch to first tools/list answer: mcp-backgroundr vs a bare MCPServer with one tool.

Timed from just before the SDK's stdio client launches the server process until the answer
to the first list_tools call has arrived; this includes the client's handshake. The baseline
is ``bench/bare_server.py`` on the same Python. Launches alternate between the two; closing
each client is not timed.
"""

from __future__ import annotations

import time

from _harness import Figure, bare_server_command, main, median, ms, serve, server_command

NAME = "startup"


async def _launch_to_tools(command: list[str]) -> float:
    started = time.perf_counter()
    async with serve(command) as server:
        await server.client.list_tools(cache_mode="bypass")
        return time.perf_counter() - started


async def measure(quick: bool) -> list[Figure]:
    launches = 4 if quick else 10
    times: dict[str, list[float]] = {"backgroundr": [], "bare": []}
    commands = {"backgroundr": server_command(), "bare": bare_server_command()}
    for launch in range(launches):
        order = ("backgroundr", "bare") if launch % 2 == 0 else ("bare", "backgroundr")
        for which in order:
            times[which].append(await _launch_to_tools(commands[which]))
    ours, bare = median(times["backgroundr"]), median(times["bare"])
    return [
        Figure(
            NAME,
            f"launch to first tools/list answer, median of {launches} launches each",
            f"{ours / bare:.2f}x the bare MCPServer (mcp-backgroundr {ms(ours)}, bare {ms(bare)}; "
            f"max {ms(max(times['backgroundr']))} and {ms(max(times['bare']))})",
        )
    ]


if __name__ == "__main__":
    main(measure)
