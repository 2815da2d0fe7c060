"""Answers for stdin lines that are not JSON-RPC messages.

The SDK's stdio transport hands such a line to the server as an exception, and the
server drops it: a client that sent a malformed request would wait forever. JSON-RPC
2.0 says a line that is not JSON gets a Parse error (-32700), and one that is JSON but
not a valid message gets Invalid Request (-32600), with the request's id when it can
be read and null otherwise. This sits between the transport and the server and
answers those; everything else passes through unchanged.
"""

from __future__ import annotations

from typing import Any

from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

PARSE_ERROR_MESSAGE = "Parse error: the line is not valid JSON; send one JSON-RPC 2.0 message per line"
INVALID_REQUEST_MESSAGE = "Invalid Request: not a JSON-RPC 2.0 request, notification or response"


def protocol_error(problem: Exception) -> JSONRPCError | None:
    """The error answer JSON-RPC 2.0 prescribes for a line the transport could not read, if any."""
    if not isinstance(problem, ValidationError):
        return None
    errors = problem.errors()
    if any(error["type"] == "json_invalid" for error in errors):
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message=PARSE_ERROR_MESSAGE))
    return JSONRPCError(
        jsonrpc="2.0",
        id=_request_id(error.get("input") for error in errors),
        error=ErrorData(code=INVALID_REQUEST, message=INVALID_REQUEST_MESSAGE),
    )


def _request_id(inputs: Any) -> int | str | None:
    """The id of the rejected message, when one of the validator's inputs is the message itself."""
    for candidate in inputs:
        if isinstance(candidate, dict):
            request_id = candidate.get("id")
            if isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool)):
                return request_id
    return None


async def answer_bad_lines(
    source: ObjectReceiveStream[SessionMessage | Exception],
    server: ObjectSendStream[SessionMessage | Exception],
    replies: ObjectSendStream[SessionMessage],
) -> None:
    """Pass messages from ``source`` to ``server``; answer unreadable lines on ``replies``."""
    async with server:
        async for item in source:
            reply = protocol_error(item) if isinstance(item, Exception) else None
            if reply is None:
                await server.send(item)
            else:
                await replies.send(SessionMessage(reply))
