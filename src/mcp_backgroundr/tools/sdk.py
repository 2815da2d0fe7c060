"""Where this package reaches into the MCP SDK's private parts: here only, each use saying why.

The official SDK (``mcp`` 2.x) offers no public way to do two things the server needs:

- **Serve an MCPServer over streams of our own.** ``MCPServer.run_stdio_async`` opens the stdio
  transport and hands it straight to the low-level server; the wire guard (``wire.py``) must sit
  between the two to answer lines that are not JSON-RPC. So :func:`serve_streams` calls the
  low-level server's ``run`` (``MCPServer._lowlevel_server``), exactly as ``run_stdio_async`` does.
- **Reach a registered tool.** ``add_tool`` returns nothing; the input schema a tool is listed
  and checked with, and the output schema its answers are validated against, live on the SDK's
  ``Tool`` held by its tool manager (``MCPServer._tool_manager``). :func:`registered_tool` gets it.

``tests/test_sdk_seam.py`` fails loudly when the SDK changes either. (Errors are reshaped
through ``exc.__cause__`` in ``appserver.py``: that is the SDK's documented contract —
"every failure other than MCPError is raised as a ToolError whose ``__cause__`` is what was
raised" — not a private part.)
"""

from __future__ import annotations

from typing import Any

from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.shared.message import SessionMessage


async def serve_streams(
    app: MCPServer[Any],
    read_stream: ObjectReceiveStream[SessionMessage | Exception],
    write_stream: ObjectSendStream[SessionMessage],
) -> None:
    """Serve one connection of ``app`` over these streams until the read side closes."""
    server = app._lowlevel_server
    await server.run(read_stream, write_stream, server.create_initialization_options())


def registered_tool(app: MCPServer[Any], name: str) -> Tool:
    """The SDK's record of the tool ``name`` (registered with ``add_tool``)."""
    tool = app._tool_manager.get_tool(name)
    if tool is None:
        raise LookupError(f"no tool {name} is registered")
    return tool
