"""Answers for stdin lines that are not JSON-RPC messages.

The SDK's stdio transport hands such a line to the server as an exception, and the
server drops it: a client that sent a malformed request would wait forever. JSON-RPC
2.0 says a line that is not JSON gets a Parse error (-32700), and one that is JSON but
not a valid message gets Invalid Request (-32600), with the request's id when it can
be read and null otherwise. This sits between the transport and the server and
answers those; everything else passes through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

PARSE_ERROR_MESSAGE = "Parse error: the line is not valid JSON; send one JSON-RPC 2.0 message per line"
INVALID_REQUEST_MESSAGE = "Invalid Request: not a JSON-RPC 2.0 request, notification or response"
INVALID_ID_MESSAGE = "Invalid Request: a request's id is a string or an integer; send one, or no id for a notification"


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


def invalid_request(line: str | bytes) -> JSONRPCError | None:
    """Invalid Request for a line with a method and an id that is not a string or an integer
    (``null``, ``1.5``, an object); None for any other line. The validator reads such a line as a
    notification (it ignores the id), which gets no answer: the client would wait forever."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    if _request_id([message]) is not None:
        return None
    return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message=INVALID_ID_MESSAGE))


def _request_id(inputs: Any) -> int | str | None:
    """The id of the rejected message, when one of the validator's inputs is the message itself."""
    for candidate in inputs:
        if isinstance(candidate, dict):
            request_id = candidate.get("id")
            if isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool)):
                return request_id
    return None


async def checked_lines(lines: AsyncIterable[str], replies: ObjectSendStream[SessionMessage]) -> AsyncIterator[str]:
    """``lines`` without those with an invalid id (:func:`invalid_request`), answered on ``replies``
    (closed at the end of ``lines``: :func:`answer_bad_lines` sends them on). Each line is parsed
    once more: this serves the SDK's transport, for a file or a terminal."""
    async with replies:
        async for line in lines:
            if (reply := invalid_request(line)) is None:
                yield line
            else:
                await replies.send(SessionMessage(reply))


async def answer_bad_lines(
    source: ObjectReceiveStream[SessionMessage | Exception],
    server: ObjectSendStream[SessionMessage | Exception],
    replies: ObjectSendStream[SessionMessage],
    answered: ObjectReceiveStream[SessionMessage],
) -> None:
    """Pass messages from ``source`` to ``server``; answer unreadable lines on ``replies``, and send
    the answers :func:`checked_lines` made (``answered``) there too, all before ``server`` closes
    (the server's end closes ``replies``)."""
    async with server, anyio.create_task_group() as group:
        group.start_soon(_send_on, answered, replies)
        async for item in source:
            reply = protocol_error(item) if isinstance(item, Exception) else None
            if reply is None:
                await server.send(item)
            else:
                await replies.send(SessionMessage(reply))


async def _send_on(answered: ObjectReceiveStream[SessionMessage], replies: ObjectSendStream[SessionMessage]) -> None:
    async with answered:
        async for reply in answered:
            await replies.send(reply)
