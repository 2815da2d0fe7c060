"""Answers for messages that are not JSON-RPC messages, the same on stdio and over HTTP.

The SDK's stdio transport hands such a line to the server as an exception, and the
server drops it: a client that sent a malformed request would wait forever. Its HTTP
transport reads a request whose id is invalid as a notification (202, no answer) and
any other malformed body as Invalid params. JSON-RPC 2.0 says a message that is not
JSON gets a Parse error (-32700), and one that is JSON but not a valid message gets
Invalid Request (-32600), with the request's id when it can be read and null
otherwise. :func:`parsed` decides, for a line on stdio and a POST body over HTTP
(``serving/bodies``) alike; the stream helpers below put it between the SDK's stdio
transport and the server, letting everything else pass through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from .. import offload
from ..models import one_line
from . import weighing

PARSE_ERROR_MESSAGE = "Parse error: not valid JSON; send one JSON-RPC 2.0 message per line on stdio, per POST over HTTP"
INVALID_REQUEST_MESSAGE = "Invalid Request: not a JSON-RPC 2.0 request, notification or response"
JSON_DEPTH_LIMIT = 200
"""How deep the SDK's JSON parser (pydantic's jiter) nests arrays and objects that hold values:
deeper JSON is valid, but it gives up ("recursion limit exceeded"; ``tests/test_wire.py`` pins it)."""
TOO_DEEP_MESSAGE = (
    f"Parse error: the JSON is nested too deep (more than {JSON_DEPTH_LIMIT} levels of arrays and objects); "
    "send the message nested less deeply"
)
BATCH_MESSAGE = "Invalid Request: a batch (a JSON array) is not taken; send its messages one by one"
HEAVY_MESSAGE = (
    f"Invalid Request: a message of more than {weighing.MAX_CONTAINERS:,} arrays and objects, or "
    f"{weighing.MAX_VALUES:,} values, is not read (parsing it would hold the server for every client); "
    "send large data as one text value"
)
INVALID_ID_MESSAGE = "Invalid Request: a request's id is a string or an integer; send one, or no id for a notification"


class Refused(Exception):
    """A message JSON-RPC 2.0 says to answer with an error (``answer``) instead of serving it."""

    def __init__(self, answer: JSONRPCError) -> None:
        super().__init__(answer.error.message)
        self.answer = answer


def parsed(text: str | bytes) -> JSONRPCMessage:
    """The JSON-RPC message ``text`` holds (a line on stdio, a POST body over HTTP).

    Raises:
        Refused: ``text`` is not JSON, not one JSON-RPC 2.0 message, or a request with an invalid id.
    """
    try:
        message = jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        raise Refused(_validation_answer(exc)) from exc
    if isinstance(message, JSONRPCNotification) and (answer := invalid_request(text)) is not None:
        raise Refused(answer)
    return message


async def too_heavy(text: str | bytes) -> JSONRPCError | None:
    """Invalid Request for a message too heavy to parse (``weighing``), weighed in a worker thread
    when it is long enough to be; None for any other."""
    if len(text) <= weighing.SMALL:
        return None
    heavy = await offload.run(offload.MESSAGES, weighing.too_heavy, text)
    if heavy is None:
        return None
    return JSONRPCError(
        jsonrpc="2.0", id=heavy.request_id, error=ErrorData(code=INVALID_REQUEST, message=HEAVY_MESSAGE)
    )


def _tool_call_problem(params: object) -> str | None:
    """What is wrong with a tools/call's params whose name is not text or whose arguments are not an
    object, if anything (only those two values are read, whatever the arguments hold)."""
    given = params if isinstance(params, Mapping) else {}
    arguments, name = given.get("arguments"), given.get("name")
    if isinstance(name, str) and (arguments is None or isinstance(arguments, Mapping)):
        return None
    if not isinstance(name, str):
        return f"Invalid params: tools/call's name is the tool's name as text, not {_json_kind(name)}"
    return f"Invalid params: tools/call's arguments is a JSON object of names to values, not {_json_kind(arguments)}"


SHOWN_METHOD = 60
"""How much of a method's name an answer shows."""
HANDSHAKE_GATE = ErrorData(code=INVALID_PARAMS, message="Invalid request parameters", data="")
"""The SDK's answer to a request sent on a handshake-era connection before ``initialize`` (the
shape its params validation gives, kept for compatibility): nothing says what to do."""


def before_initialize(method: str, then: str) -> str:
    """The one line for a ``method`` request sent before the handshake; ``then``: what goes on
    (notifications/initialized on stdio, the session header over HTTP)."""
    shown = one_line(method, SHOWN_METHOD)
    return f"{shown} was sent before initialize: send the initialize request first, then {then}"


async def said_plainly(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: what the SDK answers with "Invalid request parameters" and empty data, said so
    that a client can act on it, on every transport and protocol era: a tools/call whose name is
    not text or whose arguments are not an object (its check of the whole request is left to the
    SDK), and a request sent before ``initialize`` on a handshake-era connection (a 2026-07-28 one
    has no handshake: the SDK names the envelope a request lacks)."""
    if ctx.method == "tools/call" and (problem := _tool_call_problem(ctx.params)) is not None:
        raise MCPError(code=INVALID_PARAMS, message=problem)
    try:
        return await call_next(ctx)
    except MCPError as exc:
        if exc.error != HANDSHAKE_GATE or ctx.method == "initialize":
            raise
        then = "notifications/initialized, then this request again"
        raise MCPError(code=INVALID_PARAMS, message=before_initialize(ctx.method, then)) from exc


def _json_kind(value: object) -> str:
    kinds = ((bool, "true or false"), (int, "a number"), (float, "a number"), (str, "text"), (list, "an array"))
    return next((kind for python, kind in kinds if isinstance(value, python)), "null" if value is None else "an object")


def protocol_error(problem: Exception) -> JSONRPCError | None:
    """The error answer JSON-RPC 2.0 prescribes for a line the transport could not read, if any."""
    return _validation_answer(problem) if isinstance(problem, ValidationError) else None


def _validation_answer(problem: ValidationError) -> JSONRPCError:
    errors = problem.errors()
    if unparsed := [error for error in errors if error["type"] == "json_invalid"]:
        too_deep = any("recursion limit exceeded" in error["msg"] for error in unparsed)
        message = TOO_DEEP_MESSAGE if too_deep else PARSE_ERROR_MESSAGE
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message=message))
    batch = any(error["type"] == "model_type" and isinstance(error.get("input"), list) for error in errors)
    return JSONRPCError(
        jsonrpc="2.0",
        id=_request_id(error.get("input") for error in errors),
        error=ErrorData(code=INVALID_REQUEST, message=BATCH_MESSAGE if batch else INVALID_REQUEST_MESSAGE),
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
            if (reply := await too_heavy(line) or invalid_request(line)) is None:
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
