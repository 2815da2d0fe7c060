"""``serve --http`` answers a malformed message as stdio does: the same JSON-RPC error, in a 400
(Streamable HTTP: a body the server cannot accept gets an HTTP error status), on both protocol
eras; what stdio takes (bytes that are not UTF-8, replaced) HTTP takes too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_backgroundr.serving.access import TOKEN_FILE

from ..reliability.rawwire import RawServer
from .harness import HttpServer, heavy_call, http_server

pytestmark = pytest.mark.anyio

REQUEST_SECONDS = 10.0
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
"""What a 2026-07-28 request carries in params._meta in place of the handshake."""


def _request(request_id: object, method: str = "tools/list") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method}


MALFORMED = [
    *(json.dumps(_request(request_id)).encode() for request_id in [None, 1.5, {"a": 1}, [1], True, 1.0]),
    json.dumps({"jsonrpc": "2.0", "id": None, "method": "notifications/initialized"}).encode(),
    json.dumps([_request(7, "ping"), _request(None, "ping"), _request(8, "ping")]).encode(),
    json.dumps({"jsonrpc": "1.0", "id": 5, "method": "ping"}).encode(),
    json.dumps({"jsonrpc": "2.0", "id": "s", "method": 7}).encode(),
    b"[]",
    b"not json",
    heavy_call(9),
    heavy_call("heavy", id_last=True),
    b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
]
"""Bodies stdio answers with an error: an invalid id (the HTTP transport read such a request as a
notification, answered 202 and nothing more: the client waited forever), a batch with one bad id among
good ones, not JSON-RPC 2.0, not JSON, too heavy to parse (its parse held every client: 6 s for 4 MiB
of nested arrays, twice), JSON nested past the parser's limit."""


@pytest.fixture
def served(server_command: str, tmp_path: Path) -> Iterator[HttpServer]:
    with http_server(server_command, tmp_path) as server:
        yield server


def _stdio_answers(server_command: str) -> list[dict[str, Any]]:
    with RawServer(server_command) as server:
        server.initialize()
        answers = []
        for body in MALFORMED:
            server.send(body)
            answers.append(server.answer())
        return answers


async def _legacy_headers(http: httpx2.AsyncClient, url: str, token: str) -> dict[str, str]:
    """Headers of a 2025-11-25 session, opened by the handshake."""
    headers = JSON_HEADERS | {"Authorization": f"Bearer {token}"}
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    opened = await http.post(url, json=_request(1, "initialize") | {"params": params}, headers=headers)
    assert opened.status_code == 200, opened.text
    headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    initialized = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert initialized.status_code == 202
    return headers


async def _both_eras(http: httpx2.AsyncClient, served: HttpServer, home: Path) -> dict[str, dict[str, str]]:
    token = (home / TOKEN_FILE).read_text().strip()
    modern = JSON_HEADERS | {"Authorization": f"Bearer {token}", "MCP-Protocol-Version": MODERN}
    return {LEGACY: await _legacy_headers(http, served.url, token), MODERN: modern}


async def test_a_malformed_body_gets_400_and_the_answer_stdio_gives_on_both_eras(
    served: HttpServer, home: Path, server_command: str
) -> None:
    expected = _stdio_answers(server_command)
    assert all("error" in answer for answer in expected), expected
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        for era, headers in (await _both_eras(http, served, home)).items():
            for body, answer in zip(MALFORMED, expected, strict=True):
                response = await http.post(served.url, content=body, headers=headers)
                assert (response.status_code, response.headers.get("content-type")) == (400, "application/json"), (
                    era,
                    body,
                    response.status_code,
                    response.text,
                )
                assert response.json() == answer, (era, body)


async def test_bytes_that_are_not_utf8_are_replaced_over_http_as_on_stdio(served: HttpServer, home: Path) -> None:
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        for era, headers in (await _both_eras(http, served, home)).items():
            meta, method = (MODERN_META, {"Mcp-Method": "tools/list"}) if era == MODERN else ({}, {})
            body = json.dumps(_request(3) | {"params": {"_meta": meta | {"pad": "PAD"}}}).encode()
            bad_bytes = body.replace(b"PAD", b"\xff\xfe")
            response = await http.post(served.url, content=bad_bytes, headers=headers | method)
            assert response.status_code == 200, (era, response.text)
            assert '"run_background_task"' in response.text, (era, response.text)


async def test_a_malformed_body_without_the_token_gets_401_not_an_answer(served: HttpServer) -> None:
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        for body in (MALFORMED[0], b"not json"):
            assert (await http.post(served.url, content=body, headers=JSON_HEADERS)).status_code == 401


async def test_a_request_before_initialize_is_told_to_send_initialize_first_on_both_eras(
    served: HttpServer, home: Path
) -> None:
    """A request that opens no session got the SDK's "Bad Request: Missing session ID", which does
    not say that initialize comes first (a new-user trial); a 2026-07-28 request, which needs no
    handshake, is told what its envelope lacks."""
    token = (home / TOKEN_FILE).read_text().strip()
    headers = JSON_HEADERS | {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        for era in ({}, {"MCP-Protocol-Version": LEGACY}):
            response = await http.post(served.url, json=_request(4), headers=headers | era)
            assert response.status_code == 400, response.text
            assert response.json()["id"] == 4
            message = response.json()["error"]["message"]
            assert message.startswith("Bad Request: tools/list was sent before initialize: send the initialize"), (
                message
            )
            assert "Mcp-Session-Id" in message, message
        modern = await http.post(served.url, json=_request(5), headers=headers | {"MCP-Protocol-Version": MODERN})
        message = modern.json()["error"]["message"]
        assert "io.modelcontextprotocol/protocolVersion" in message and "initialize" not in message, message
        session = await _legacy_headers(http, served.url, token)
        assert '"run_background_task"' in (await http.post(served.url, json=_request(6), headers=session)).text


async def test_tool_arguments_that_are_not_an_object_are_answered_with_what_to_send_on_both_eras(
    served: HttpServer, home: Path
) -> None:
    """Over HTTP they got the SDK's "Invalid request parameters" with empty data (the 2025 era) or
    its own words (2026-07-28), where stdio says what to send."""
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        for era, headers in (await _both_eras(http, served, home)).items():
            meta, named = (
                (MODERN_META, {"Mcp-Method": "tools/call", "Mcp-Name": "list_tasks"}) if era == MODERN else ({}, {})
            )
            params = {"name": "list_tasks", "arguments": [1], "_meta": meta}
            response = await http.post(
                served.url, json=_request(3, "tools/call") | {"params": params}, headers=headers | named
            )
            assert "tools/call's arguments is a JSON object of names to values, not an array" in response.text, (
                era,
                response.text,
            )
