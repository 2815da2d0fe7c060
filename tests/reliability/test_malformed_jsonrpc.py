"""Malformed JSON-RPC on stdin: an error answer where JSON-RPC 2.0 prescribes one, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .rawwire import RawServer

pytestmark = pytest.mark.reliability

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HUGE = 20 * 1024 * 1024

# (what is sent, the error code of the answer, the id it must carry)
BAD_LINES: list[tuple[bytes, int, int | str | None]] = [
    (b"garbage", PARSE_ERROR, None),
    (b'{"jsonrpc":"2.0","id":1,"method":', PARSE_ERROR, None),
    (b"\xff\xfe\x00\x01", PARSE_ERROR, None),
    (b"", PARSE_ERROR, None),
    (b"[1, 2]", INVALID_REQUEST, None),
    (b"42", INVALID_REQUEST, None),
    (b'{"jsonrpc":"1.0","id":4,"method":"ping"}', INVALID_REQUEST, 4),
    (b'{"jsonrpc":"2.0","id":"five","method":"initialize","params":"x"}', INVALID_REQUEST, "five"),
    (b'{"jsonrpc":"2.0","id":6,"method":7}', INVALID_REQUEST, 6),
    (b'{"jsonrpc":"2.0","method":5}', INVALID_REQUEST, None),
    (b'{"jsonrpc":"2.0","id":8,"method":"no/such/method"}', METHOD_NOT_FOUND, 8),
    # Far more arrays than a message may hold: refused unread (tools/weighing.py), whatever else is wrong
    # with it, with the id its top level gives.
    (b'{"jsonrpc":"2.0","id":9,"method":"ping","params":' + b"[" * 100_000, INVALID_REQUEST, 9),
    (b'"' + b"x" * HUGE, PARSE_ERROR, None),
]


def test_each_bad_line_gets_its_error_and_the_server_keeps_serving(server_command: str) -> None:
    with RawServer(server_command) as server:
        for line, code, request_id in BAD_LINES:
            server.send(line)
            answer = server.answer()
            assert answer.get("error", {}).get("code") == code, (line[:60], answer)
            assert answer["id"] == request_id, (line[:60], answer)
        server.initialize()
        assert len(server.request("tools/list")["result"]["tools"]) == 7
        listed = server.request("tools/call", {"name": "list_tasks", "arguments": {}})
        assert listed["result"]["structuredContent"] == {"tasks": [], "total": 0}


def test_bad_requests_after_the_handshake_are_answered_too(server_command: str) -> None:
    with RawServer(server_command) as server:
        server.initialize()
        calls: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
            ({"name": 5}, lambda a: a["error"]["code"] == INVALID_PARAMS),
            ({"name": "list_tasks", "arguments": "x"}, lambda a: a["error"]["code"] == INVALID_PARAMS),
            ({"name": "no_such_tool", "arguments": {}}, lambda a: a["result"]["isError"] is True),
            ({"name": "get_task_status", "arguments": {"task_id": ["x"]}}, lambda a: a["result"]["isError"] is True),
        ]
        for params, check in calls:
            answer = server.request("tools/call", params)
            assert check(answer), (params, answer)
        server.send(b'{"jsonrpc":"2.0","id":77,"method":"ping","padding":"' + b"y" * HUGE + b'"}')
        assert server.answer() == {"jsonrpc": "2.0", "id": 77, "result": {}}
        started = server.request("tools/call", {"name": "run_background_task", "arguments": {"command": "echo ok"}})
        assert started["result"]["isError"] is False
