"""Where this package reaches into the MCP SDK's private parts: here only, each use saying why.

The official SDK (``mcp`` 2.x) offers no public way to do four things the server needs:

- **Serve an MCPServer over streams of our own.** ``MCPServer.run_stdio_async`` opens the stdio
  transport and hands it straight to the low-level server; the wire guard (``wire.py``) must sit
  between the two to answer lines that are not JSON-RPC. So :func:`serve_streams` calls the
  low-level server's ``run`` (``MCPServer._lowlevel_server``), exactly as ``run_stdio_async`` does.
- **Reach a registered tool.** ``add_tool`` returns nothing; the input schema a tool is listed
  and checked with, and the output schema its answers are validated against, live on the SDK's
  ``Tool`` held by its tool manager (``MCPServer._tool_manager``). :func:`registered_tool` gets it.
- **Claim stdin and stdout as its stdio transport does** (``mcp.server.stdio._claim_fd``): serve
  the wire from private duplicates while fd 0 reads the null device and fd 1 writes to stderr, so
  that stray reads and prints miss the wire, and put both back afterwards. The server serves those
  pipes on its event loop (``pipes.py``) instead of the transport's worker threads.
  :func:`claimed_stdio` does it. For a file or a terminal the transport serves the claimed wire
  (``threaded.py``), its lines read with the transport's text wrapper (:func:`text_reader`,
  ``stdio._UnownedTextWrapper``: closing it leaves the wire open), so that the wire guard sees
  them before the transport parses them (a request's invalid id is lost once a line is parsed).
- **Read a POST body before its Streamable HTTP transport does**, behind authentication and the
  body-size limit: the transport reads a request with an invalid id as a notification (202, no
  answer), so the body check (``serving/bodies.py``) must come first. The session manager
  (``MCPServer.session_manager``, public) serves through ``asgi_app``, the SDK's
  ``RequestBodyLimitMiddleware`` around the transport; :func:`check_http_bodies` wraps what it wraps.

``tests/test_sdk_seam.py`` fails loudly when the SDK changes any of them. (Errors are reshaped
through ``exc.__cause__`` in ``appserver.py``: that is the SDK's documented contract —
"every failure other than MCPError is raised as a ToolError whose ``__cause__`` is what was
raised" — not a private part.)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TextIO

from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server import MCPServer, stdio
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.message import SessionMessage
from starlette.types import ASGIApp


async def serve_streams(
    app: MCPServer[Any],
    read_stream: ObjectReceiveStream[SessionMessage | Exception],
    write_stream: ObjectSendStream[SessionMessage],
) -> None:
    """Serve one connection of ``app`` over these streams until the read side closes."""
    server = app._lowlevel_server
    await server.run(read_stream, write_stream, server.create_initialization_options())


def check_http_bodies(app: MCPServer[Any], check: Callable[[ASGIApp], ASGIApp]) -> None:
    """Serve ``app``'s Streamable HTTP requests through ``check`` (given what it wraps), after the SDK's
    authentication and body-size limit and before its transport; ``streamable_http_app`` first."""
    limit = app.session_manager.asgi_app
    if not isinstance(limit, RequestBodyLimitMiddleware):
        raise LookupError("the session manager no longer serves through RequestBodyLimitMiddleware")
    limit.app = check(limit.app)


def registered_tool(app: MCPServer[Any], name: str) -> Tool:
    """The SDK's record of the tool ``name`` (registered with ``add_tool``)."""
    tool = app._tool_manager.get_tool(name)
    if tool is None:
        raise LookupError(f"no tool {name} is registered")
    return tool


@contextlib.contextmanager
def claimed_stdio() -> Iterator[tuple[int, int]]:
    """Descriptors of the wire's stdin and stdout, claimed as the SDK's stdio transport claims them
    (fd 0 and 1 diverted meanwhile, restored on leaving; a second claim raises RuntimeError)."""
    with claimed_stdin() as source:
        sink, restore_stdout = stdio._claim_fd(1, sys.stdout, "wb", stdio._open_stdout_diversion)
        try:
            yield source.fileno(), sink.fileno()
        finally:
            if restore_stdout is not None:
                restore_stdout()


@contextlib.contextmanager
def claimed_stdin() -> Iterator[BinaryIO]:
    """The wire's stdin, claimed as the SDK's stdio transport claims it (see :func:`claimed_stdio`)."""
    source, restore_stdin = stdio._claim_fd(0, sys.stdin, "rb", stdio._open_stdin_diversion)
    try:
        yield source
    finally:
        if restore_stdin is not None:
            restore_stdin()


def text_reader(source: BinaryIO) -> TextIO:
    """``source`` read as the SDK's transport reads it: UTF-8 with bad bytes replaced, universal
    newlines; closing it leaves ``source`` open (the SDK's own text wrapper)."""
    return stdio._UnownedTextWrapper(source, encoding="utf-8", errors="replace")
