"""Drive the installed mcp-backgroundr through the official SDK's stdio client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

import anyio
import psutil
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

from mcp_backgroundr.config import HOME_ENV


def server_parameters(command: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    """Launch parameters carrying the test's state directory and PATH."""
    base = {HOME_ENV: os.environ[HOME_ENV], "PATH": os.environ["PATH"]}
    return StdioServerParameters(command=command, env=base | (env or {}))


@contextlib.asynccontextmanager
async def connect(command: str, errlog: TextIO | None = None) -> AsyncIterator[Client]:
    """A client session with a fresh server; leaving it closes the server's stdin."""
    with contextlib.ExitStack() as stack:
        log = errlog or stack.enter_context(open(os.devnull, "w"))
        async with Client(stdio_client(server_parameters(command), errlog=log)) as client:
            yield client


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured answer."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its one-line error."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) did not fail: {text_of(result)}"
    message = text_of(result)
    assert "\n" not in message and "Traceback" not in message, message
    return message


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Wait, bounded, until an observable condition holds."""
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.02)


async def finished(client: Client, task_id: str, **arguments: Any) -> dict[str, Any]:
    """Status of a task once its main process has exited (bounded wait)."""
    status: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal status
        status = await call(client, "get_task_status", task_id=task_id, **arguments)
        return bool(status["state"] != "running")

    await until(done)
    return status


def alive(pids: list[int]) -> list[int]:
    """The pids among ``pids`` that still run (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running
