"""End-to-end: a client's flood of requests is bounded; what it sends beyond the bound is refused at once.

Each request in flight keeps a few hundred objects alive that every full garbage collection walks
on the event loop, so a client with thousands in flight held every later call for seconds
(docs/benchmarks.md 22). A request read while MAX_IN_FLIGHT of the same client are in flight is
answered at once with one line naming the bound and what to do; the requests in flight go on.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_backgroundr.tools.draining import MAX_IN_FLIGHT

from ..reliability.rawwire import RawServer
from .harness import call, connect

pytestmark = pytest.mark.anyio

ANSWER_BOUND_SECONDS = 20.0
"""Generous: the refusal is immediate; the server takes in the requests ahead of it first."""
WAIT_SECONDS = 60


async def _list_behind(client: Client, waits: int, task_id: str) -> tuple[str | dict[str, Any], list[object]]:
    """Send ``waits`` waits on the task, then a list_tasks behind them: what the list got (its refusal's
    message, or its answer), and what the waits got by then (they are then cancelled)."""
    answers: list[object] = []
    got: list[str | dict[str, Any]] = []

    async def wait() -> None:
        answers.append(await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": WAIT_SECONDS}))

    async def list_tasks() -> None:
        try:
            got.append(await call(client, "list_tasks"))
        except MCPError as refused:
            got.append(refused.error.message)
        group.cancel_scope.cancel()

    with anyio.fail_after(ANSWER_BOUND_SECONDS):
        async with anyio.create_task_group() as group:
            for _ in range(waits):
                group.start_soon(wait)
            group.start_soon(list_tasks)  # sent after every wait: tasks start in order
    return got[0], answers


async def test_a_request_beyond_the_bound_in_flight_is_refused_at_once_and_the_rest_go_on(
    server_command: str,
) -> None:
    async with connect(server_command) as client:
        await client.list_tools()
        task_id = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        within, answered_within = await _list_behind(client, MAX_IN_FLIGHT - 1, task_id)
        beyond, answered_beyond = await _list_behind(client, MAX_IN_FLIGHT, task_id)
        after = await call(client, "list_tasks")
        await call(client, "end_background_task", task_id=task_id, grace_seconds=0)
    assert isinstance(within, dict) and [row["task_id"] for row in within["tasks"]] == [task_id]
    assert beyond == (
        f"refused unread: {MAX_IN_FLIGHT} requests of this client are already in flight, the most one client "
        "may have; wait for some of them to be answered (or cancel them), then send it again"
    )
    assert answered_within == answered_beyond == []  # every wait was still pending meanwhile
    assert [row["task_id"] for row in after["tasks"]] == [task_id]  # the cancelled waits no longer count


def test_requests_cancelled_by_their_id_written_as_a_string_no_longer_count(server_command: str) -> None:
    """A cancellation may name its request's integer id as a string ("7" for 7): the SDK takes it for
    the same id (its coerce_request_id), cancels the request and never answers it. The bound must
    let it go too, or MAX_IN_FLIGHT such cancellations refuse every later request of the client."""
    with RawServer(server_command) as server:
        server.initialize()
        started = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": "sleep 300"}})
        task_id = started["result"]["structuredContent"]["task_id"]
        wait = {"name": "wait_for_task", "arguments": {"task_id": task_id, "timeout_seconds": WAIT_SECONDS}}
        for request_id in range(MAX_IN_FLIGHT):
            request = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": wait}
            cancel = {"requestId": str(request_id), "reason": "not needed"}
            server.send(json.dumps(request).encode())
            server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}).encode())
        pinged = server.request("ping")
        ended = server.request(
            "tools/call", {"name": "end_background_task", "arguments": {"task_id": task_id, "grace_seconds": 0}}
        )
    assert pinged.get("result") == {}, pinged
    assert ended["result"]["structuredContent"]["state"] == "killed", ended
