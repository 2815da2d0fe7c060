"""A stdio client's requests in flight: bounded in number, and answered before the server leaves.

At most MAX_IN_FLIGHT requests of the client are in flight at once; one read beyond that is
answered at once with an error naming the bound, never handed to the server. Each pending request
keeps a few hundred objects alive, which every full garbage collection walks on the event loop:
5,000 waits held a list_tasks sent behind them 4.6 to 13 s, 1,000 about half a second
(docs/benchmarks.md 22). No client sends so many at once: it is what a runaway loop does. (Over HTTP each
request in flight holds a connection, and connections are bounded, at as many: serving/connections.py.)

Requests a client sent before it ended the server's stdin are answered before the server leaves.

Ending stdin is how an MCP client on stdio says it is done, and how ``printf ... | mcp-backgroundr``
or ``mcp-backgroundr < requests.jsonl`` ends. The SDK's dispatcher cancels every request in flight
the moment its read stream ends, so a call read just before the end got "Connection closed", or
no answer at all when it had not started yet. Here the server's read stream ends only once every
request it delivered is answered (or cancelled by the client), or a grace period after the wire
ended, whichever comes first: each request still running then is answered here, saying why, and
the SDK's late answer to it is dropped. Then the server ends its tasks and exits, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)

MAX_IN_FLIGHT = 1000
"""Requests of one stdio client in flight at once (read, and neither answered nor cancelled)."""
TOO_MANY_IN_FLIGHT = -32003
"""The JSON-RPC error code (implementation-defined server error) of a request refused beyond MAX_IN_FLIGHT."""


def too_many_message(bound: int) -> str:
    """The answer to a request read while ``bound`` requests of the same client are in flight."""
    return (
        f"refused unread: {bound} requests of this client are already in flight, the most one client may have; "
        "wait for some of them to be answered (or cancel them), then send it again"
    )


def left_message(grace_seconds: float) -> str:
    """The answer to a request still running ``grace_seconds`` after stdin ended."""
    return (
        "not answered: the client ended the server's stdin while this request ran, and it was still running "
        f"{grace_seconds:g} s later; the server now ends its tasks (not those started with keep_running) and exits"
    )


class _Ledger:
    """The requests read from the wire and not yet answered, and those answered here for good."""

    def __init__(self, replies: ObjectSendStream[SessionMessage], grace_seconds: float, bound: int) -> None:
        self._replies = replies
        self._grace_seconds = grace_seconds
        self._bound = bound
        self._open: dict[RequestId, RequestId] = {}
        """The requests in flight: the id the SDK correlates them by (its ``coerce_request_id``: "7" and 7
        are one id, for a cancellation too) -> their id as the client wrote it (for an answer given here)."""
        self._given_up: set[RequestId] = set()
        self._changed = anyio.Event()

    def read(self, item: SessionMessage | Exception) -> JSONRPCRequest | None:
        """Take note of what the wire delivered; a request beyond the bound is returned instead (refuse it)."""
        message = item.message if isinstance(item, SessionMessage) else None
        if isinstance(message, JSONRPCRequest):
            key = coerce_request_id(message.id)
            if len(self._open) >= self._bound and key not in self._open:
                return message
            self._open[key] = message.id
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            # A cancelled request gets no answer (the protocol's rule): nothing to wait for.
            self._closed((message.params or {}).get("requestId"))
        return None

    async def refuse(self, request_id: RequestId) -> None:
        """Answer a request beyond the bound, the server never seeing it."""
        error = ErrorData(code=TOO_MANY_IN_FLIGHT, message=too_many_message(self._bound))
        await self._replies.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))

    def passes(self, item: SessionMessage) -> bool:
        """Whether the server's answer goes on to the client (not when it was answered here already)."""
        return _answered_id(item) not in self._given_up

    def sent(self, item: SessionMessage) -> None:
        """The server's answer has been handed to the wire: its request no longer holds the end back
        (not before: the SDK cancels a handler still waiting to hand its answer over, and it is lost)."""
        self._closed(_answered_id(item))

    def _closed(self, request_id: object) -> None:
        if isinstance(request_id, int | str) and self._open.pop(coerce_request_id(request_id), None) is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def settle(self) -> None:
        """Wait for the open requests (at most the grace period), then answer those left (for at most
        as long again: a client that has stopped reading gets no more)."""
        with anyio.move_on_after(self._grace_seconds):
            while self._open:
                await self._changed.wait()
        left, self._open = sorted(self._open.values(), key=str), {}
        self._given_up.update(left)
        error = ErrorData(code=CONNECTION_CLOSED, message=left_message(self._grace_seconds))
        with (
            anyio.move_on_after(self._grace_seconds),
            contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError),
        ):
            for request_id in left:
                await self._replies.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))


def _answered_id(item: SessionMessage) -> RequestId | None:
    """The id of the request ``item`` answers, if it is an answer."""
    message = item.message
    return message.id if isinstance(message, JSONRPCResponse | JSONRPCError) else None


class _Reads(ObjectReceiveStream[SessionMessage | Exception]):
    """The wire's messages, its end held back until the requests read are answered."""

    def __init__(
        self, wire: ObjectReceiveStream[SessionMessage | Exception], ledger: _Ledger, when_it_ends: Callable[[], None]
    ) -> None:
        self._wire = wire
        self._ledger = ledger
        self._when_it_ends = when_it_ends

    async def receive(self) -> SessionMessage | Exception:
        while True:
            try:
                item = await self._wire.receive()
            except anyio.EndOfStream:
                self._when_it_ends()
                await self._ledger.settle()
                raise
            beyond = self._ledger.read(item)
            if beyond is None:
                return item
            await self._ledger.refuse(beyond.id)

    async def aclose(self) -> None:
        await self._wire.aclose()


class _Writes(ObjectSendStream[SessionMessage]):
    """The server's answers, but for those to requests answered here already."""

    def __init__(self, wire: ObjectSendStream[SessionMessage], ledger: _Ledger) -> None:
        self._wire = wire
        self._ledger = ledger

    async def send(self, item: SessionMessage) -> None:
        if self._ledger.passes(item):
            await self._wire.send(item)
            self._ledger.sent(item)

    async def aclose(self) -> None:
        await self._wire.aclose()


def answered_before_leaving(
    reads: ObjectReceiveStream[SessionMessage | Exception],
    writes: ObjectSendStream[SessionMessage],
    when_it_ends: Callable[[], None],
    grace_seconds: float,
    bound: int = MAX_IN_FLIGHT,
) -> tuple[ObjectReceiveStream[SessionMessage | Exception], ObjectSendStream[SessionMessage]]:
    """``reads`` and ``writes`` for the server, at most ``bound`` requests in flight and the end of
    ``reads`` held back as the module says (for at most ``grace_seconds``); ``when_it_ends`` is told at
    once when the wire ends (before the requests in flight are waited for)."""
    ledger = _Ledger(writes, grace_seconds, bound)
    return _Reads(reads, ledger, when_it_ends), _Writes(writes, ledger)
