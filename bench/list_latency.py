"""list_tasks with 100 running tasks, the scenario of the side-by-side run (bench/peers.py), where
desktop-commander answered in 4.8 ms and this server in 28 ms.

Timed through the SDK's ``Client.call_tool`` (which checks the answer against the tool's output
schema, as every SDK client does) and as a plain JSON round trip (the server's share alone).

    python bench/list_latency.py [--quick]
"""

from __future__ import annotations

from _harness import Figure, main, median, ms, serve, timed

NAME = "list_tasks, 100 running tasks"
TASKS = 100
WARM_UP = 5
FASTEST_PEER = 0.0048
"""desktop-commander's list_sessions with 100 sessions, from the side-by-side run."""


async def measure(quick: bool) -> list[Figure]:
    calls = 30 if quick else 100
    async with serve() as server:
        for _ in range(TASKS):
            await server.call("run_background_task", command="sleep 600")
        for _ in range(WARM_UP):
            await server.call("list_tasks", limit=TASKS)
        checked = [await timed(lambda: server.call("list_tasks", limit=TASKS)) for _ in range(calls)]
        raw = [await timed(lambda: server.call_raw("list_tasks", limit=TASKS)) for _ in range(calls)]
    return [
        Figure(
            NAME,
            f"through Client.call_tool (schema-checked), median of {calls}",
            f"{ms(median(checked))} (max {ms(max(checked))})",
            f"<= {ms(FASTEST_PEER)} (desktop-commander)",
            median(checked) <= FASTEST_PEER,
        ),
        Figure(NAME, f"plain JSON round trip (server's share), median of {calls}", ms(median(raw))),
    ]


if __name__ == "__main__":
    main(measure)
