"""The MCP Inspector CLI (2.x) as the client: list the tools, then start, status and end a task.

Each Inspector invocation is a new connection. Over stdio that is a new server too,
so the task is started with keep_running and each next server adopts it; over HTTP
one server holds it while the connections come and go.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_backgroundr.config import HOME_ENV
from mcp_backgroundr.serving.access import TOKEN_FILE

from ..e2e.harness import alive, http_server
from .npm_tools import NpmTools

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(900)]

INSPECTOR_SECONDS = 60
TOOLS = {
    "run_background_task",
    "get_task_status",
    "wait_for_task",
    "end_background_task",
    "send_task_input",
    "remove_task",
    "list_tasks",
}


async def inspect(npm_tools: NpmTools, target: list[str], *request: str, succeed: bool = True) -> dict[str, Any]:
    """One Inspector CLI call; its JSON answer."""
    with anyio.fail_after(INSPECTOR_SECONDS):
        result = await anyio.run_process([*npm_tools.inspector, *target, *request], check=False)
    output, errors = result.stdout.decode(), result.stderr.decode()
    assert (result.returncode == 0) == succeed, f"exit {result.returncode}: {output[-1500:]} {errors[-1500:]}"
    answer: dict[str, Any] = json.loads(output) if succeed else {}
    return answer


async def start_status_end(npm_tools: NpmTools, target: list[str], *start_arguments: str) -> None:
    listed = await inspect(npm_tools, target, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS

    def call(tool: str, *arguments: str) -> list[str]:
        return ["--method", "tools/call", "--tool-name", tool, "--tool-arg", *arguments]

    started = (await inspect(npm_tools, target, *call("run_background_task", "command=sleep 300", *start_arguments)))[
        "structuredContent"
    ]
    task = f"task_id={started['task_id']}"
    status = (await inspect(npm_tools, target, *call("get_task_status", task)))["structuredContent"]
    assert status["state"] == "running" and status["pid"] == started["pid"] and alive([started["pid"]])
    ended = (await inspect(npm_tools, target, *call("end_background_task", task)))["structuredContent"]
    assert ended["state"] == "killed" and ended["survivors"] == []
    assert not alive([started["pid"]])


async def test_inspector_over_stdio(npm_tools: NpmTools, server_command: str, home: Path) -> None:
    target = [server_command, "-e", f"{HOME_ENV}={home}", "-e", f"PATH={os.environ['PATH']}"]
    await start_status_end(npm_tools, target, "keep_running=true")


async def test_inspector_over_http_with_the_token(
    npm_tools: NpmTools, server_command: str, tmp_path: Path, home: Path
) -> None:
    with http_server(server_command, tmp_path) as server:
        await inspect(npm_tools, [server.url], "--method", "tools/list", succeed=False)
        token = (home / TOKEN_FILE).read_text().strip()
        await start_status_end(npm_tools, [server.url, "--header", f"Authorization: Bearer {token}"])
