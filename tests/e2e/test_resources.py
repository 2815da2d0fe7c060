"""End-to-end: each task's log is an MCP resource, and clients hear when tasks change."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated
from mcp_types import TextResourceContents

from .harness import call, connect

pytestmark = pytest.mark.anyio


async def test_task_logs_are_listed_and_readable(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="echo from the log; sleep 300")
        uri = f"task://{task['task_id']}/log"
        await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="from the log", since=0)
        listed = await client.list_resources()
        read = await client.read_resource(uri)
        templates = await client.list_resource_templates()
        missing = None
        try:
            await client.read_resource("task://nope/log")
        except Exception as exc:  # the SDK raises the server's JSON-RPC error
            missing = str(exc)
    assert uri in [str(r.uri) for r in listed.resources]
    content = read.contents[0]
    assert isinstance(content, TextResourceContents)
    assert content.text == "from the log\n"
    assert sorted(t.uri_template for t in templates.resource_templates) == [
        "task://{task_id}/command",
        "task://{task_id}/log",
    ]
    assert missing is not None
    assert "nope" in missing


async def test_listeners_hear_a_task_end_and_the_list_change(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        uri = f"task://{task['task_id']}/log"
        events: list[object] = []
        async with client.listen(resources_list_changed=True, resource_subscriptions=[uri]) as subscription:
            await call(client, "end_background_task", task_id=task["task_id"])
            with anyio.fail_after(10):
                async for event in subscription:
                    events.append(event)
                    if {type(e) for e in events} >= {ResourceUpdated, ResourcesListChanged}:
                        break
    assert any(isinstance(e, ResourceUpdated) and e.uri == uri for e in events)
    assert any(isinstance(e, ResourcesListChanged) for e in events)
