"""POST bodies over Streamable HTTP read as stdio reads a line: a malformed message gets the same answer.

The SDK's HTTP transport read a request whose id is invalid (null, 1.5, an object, true) as a
notification: 202 and no answer, so the client waited forever, where stdio answers Invalid Request.
Other malformed bodies got Invalid params (-32602) and pydantic's multi-line report on the 2025
handshake era, and other words on 2026-07-28. Each POST body is read here first, by the parser stdio
uses (``tools/wire.parsed``); one it refuses gets HTTP 400, as Streamable HTTP prescribes for a body
the server cannot accept, with the JSON-RPC error stdio writes for that line, on both eras. Bytes
that are not UTF-8 are replaced, as on stdio, so what stdio takes is taken here too.

A request other than ``initialize`` that opens no session (no ``Mcp-Session-Id``) on the handshake
era got the SDK's "Bad Request: Missing session ID", which does not say that initialize comes
first: it gets that line here, as on stdio (``wire.before_initialize``).

It runs behind the token check and the SDK's body-size limit, so it holds at most that much.
"""

from __future__ import annotations

from collections import deque

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError, JSONRPCMessage, JSONRPCRequest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..tools import wire

REFUSED_STATUS = 400
"""Streamable HTTP: a body the server cannot accept gets an HTTP error status (e.g. 400 Bad Request)."""


class CheckedBodies:
    """ASGI: answer a POST body stdio would refuse; pass the others on, bytes that are not UTF-8 replaced."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        messages = await _request_messages(receive)
        if messages[-1]["type"] != "http.request":
            # The client left before its body was whole: the transport sees that, as before.
            await self._app(scope, _replay(messages, receive), send)
            return
        body = _as_utf8(b"".join(message.get("body", b"") for message in messages))
        if (refusal := await wire.too_heavy(body)) is not None:
            await _refuse(refusal, scope, receive, send)
            return
        try:
            message = wire.parsed(body)
        except wire.Refused as refused:
            await _refuse(refused.answer, scope, receive, send)
            return
        if (early := _before_initialize(message, scope)) is not None:
            await _refuse(early, scope, receive, send)
            return
        whole = {"type": "http.request", "body": body, "more_body": False}
        await self._app(scope, _replay([whole], receive), send)


_SESSION = MCP_SESSION_ID_HEADER.encode()
_VERSION = MCP_PROTOCOL_VERSION_HEADER.encode()
_AFTER_INITIALIZE = "the Mcp-Session-Id header its answer gives with every request"


def _before_initialize(message: JSONRPCMessage, scope: Scope) -> JSONRPCError | None:
    """The answer for a handshake-era request that is not ``initialize`` and names no session."""
    if not isinstance(message, JSONRPCRequest) or message.method == "initialize":
        return None
    headers = dict(scope["headers"])
    version = headers.get(_VERSION)
    if _SESSION in headers or (version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS):
        return None
    problem = "Bad Request: " + wire.before_initialize(message.method, _AFTER_INITIALIZE)
    return JSONRPCError(jsonrpc="2.0", id=message.id, error=ErrorData(code=INVALID_REQUEST, message=problem))


async def _request_messages(receive: Receive) -> list[Message]:
    """The request's body messages, up to its last one or to the client's leaving."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


def _as_utf8(body: bytes) -> bytes:
    """``body`` with bytes that are not UTF-8 replaced (U+FFFD), as stdio reads a line."""
    try:
        body.decode()
    except UnicodeDecodeError:
        return body.decode(errors="replace").encode()
    return body


async def _refuse(answer: JSONRPCError, scope: Scope, receive: Receive, send: Send) -> None:
    text = answer.model_dump_json(by_alias=True, exclude_unset=True)
    await Response(text, status_code=REFUSED_STATUS, media_type="application/json")(scope, receive, send)
