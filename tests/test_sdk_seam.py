"""The SDK's private parts this package uses (``tools/sdk.py``) are still there and still work:
if a new SDK release moves them, this fails first, naming what moved."""

from __future__ import annotations

import inspect

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.lowlevel import Server
from mcp.server.mcpserver.exceptions import ToolError

from mcp_backgroundr.results import Listing
from mcp_backgroundr.tools import sdk
from mcp_backgroundr.tools.answers import listing_answer

pytestmark = pytest.mark.anyio


def _app() -> MCPServer[object]:
    app: MCPServer[object] = MCPServer("seam")

    @app.tool()
    def echo(text: str) -> str:
        return text

    @app.tool()
    def fail() -> str:
        raise ValueError("the tool's own words")

    return app


def test_the_low_level_server_is_where_serve_streams_looks() -> None:
    server = getattr(_app(), "_lowlevel_server", None)
    assert isinstance(server, Server), "MCPServer._lowlevel_server moved: tools/sdk.serve_streams must follow"
    parameters = list(inspect.signature(server.run).parameters)
    assert parameters[:3] == ["read_stream", "write_stream", "initialization_options"], parameters


def test_a_registered_tool_carries_the_schemas_the_server_uses() -> None:
    tool = sdk.registered_tool(_app(), "echo")
    assert tool.parameters["properties"]["text"]["type"] == "string"
    assert hasattr(tool.fn_metadata, "output_schema")
    with pytest.raises(LookupError):
        sdk.registered_tool(_app(), "nothing")


def test_the_sdk_dumps_an_answer_to_send_it_as_a_listing_answer_expects() -> None:
    """A listing's answer is sent without a walk of its rows only when the SDK dumps it with
    ``answers.SENT_AS`` (else pydantic dumps it, as it did before): its rows reach the SDK as they are."""
    from mcp.server import runner

    listing = Listing(tasks=[], total=0)
    answer = listing_answer(listing, "no tasks")
    dumped = runner._dump_result(answer)
    assert dumped["structuredContent"] is answer.structured_content, "the SDK no longer dumps answers with SENT_AS"


async def test_a_tool_failure_keeps_what_was_raised_as_its_cause() -> None:
    with pytest.raises(ToolError) as caught:
        await _app().call_tool("fail", {})
    assert isinstance(caught.value.__cause__, ValueError)


async def test_serve_streams_answers_over_the_streams_it_is_given() -> None:
    from mcp.client.session import ClientSession
    from mcp.shared.message import SessionMessage

    to_server_send, to_server = anyio.create_memory_object_stream[SessionMessage | Exception](8)
    from_server_send, from_server = anyio.create_memory_object_stream[SessionMessage](8)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(sdk.serve_streams, _app(), to_server, from_server_send)
            async with ClientSession(from_server, to_server_send) as session:
                await session.initialize()
                result = await session.call_tool("echo", {"text": "hi"})
            assert not result.is_error
            group.cancel_scope.cancel()


async def test_a_crash_in_a_tool_is_answered_in_one_line_that_says_what_to_do() -> None:
    """The SDK raises an UnexpectedToolError with no text of the crash; the client gets one line."""
    from mcp.server.subscriptions import InMemorySubscriptionBus
    from mcp_types import CallToolRequestParams, CallToolResult, ToolAnnotations

    from mcp_backgroundr.tools.appserver import BackgroundrMCPServer, crash_answer

    app = BackgroundrMCPServer("crash", InMemorySubscriptionBus())

    @app.background_tool(ToolAnnotations())
    def crash() -> str:
        """Raise what no tool means to."""
        raise ProcessLookupError(3, "No such process")

    del crash
    result = await app._handle_call_tool(None, CallToolRequestParams(name="crash", arguments={}))  # type: ignore[arg-type]
    assert isinstance(result, CallToolResult) and result.is_error
    assert [block.text for block in result.content] == [crash_answer("crash")]  # type: ignore[union-attr]
    assert "\n" not in crash_answer("crash") and "No such process" not in crash_answer("crash")


def test_claimed_stdio_finds_the_transport_s_claim() -> None:
    from mcp.server import stdio

    for name in ("_claim_fd", "_open_stdin_diversion", "_open_stdout_diversion"):
        moved = f"mcp.server.stdio.{name} moved: tools/sdk.claimed_stdio must follow"
        assert callable(getattr(stdio, name, None)), moved
    parameters = list(inspect.signature(stdio._claim_fd).parameters)
    assert parameters == ["fd", "stream", "mode", "open_diversion"], parameters


def test_check_http_bodies_finds_the_body_limit_in_front_of_the_transport() -> None:
    from mcp.server.transport_security import RequestBodyLimitMiddleware
    from starlette.types import ASGIApp

    app = _app()
    app.streamable_http_app()
    wrapped: list[ASGIApp] = []

    def check(inner: ASGIApp) -> ASGIApp:
        wrapped.append(inner)
        return inner

    sdk.check_http_bodies(app, check)
    limit = app.session_manager.asgi_app
    moved = "the session manager's asgi_app moved: tools/sdk.check_http_bodies must follow"
    assert isinstance(limit, RequestBodyLimitMiddleware) and wrapped == [limit.app], moved
