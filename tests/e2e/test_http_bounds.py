"""``serve --http`` holds a connection only while it is used: a client that never finishes a
request head (one header byte every second, or nothing at all) is cut off, and the server
goes on answering everyone else."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from anyio.abc import SocketStream

from mcp_backgroundr.serving.access import TOKEN_FILE
from mcp_backgroundr.serving.connections import HEAD_SECONDS

from .harness import http_server

pytestmark = pytest.mark.anyio

CUT_OFF_BOUND_SECONDS = HEAD_SECONDS + 20
"""Generous: without a head deadline neither connection would ever be closed."""
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


async def _closed_by_server(stream: SocketStream) -> None:
    """Return once the server has closed the connection."""
    try:
        while await stream.receive():
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return


async def _trickle(stream: SocketStream, data: bytes) -> None:
    """Send ``data`` one byte a second, as a slow-header (slowloris) client does."""
    try:
        for byte in data:
            await stream.send(bytes([byte]))
            await anyio.sleep(1)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
        return


async def test_slow_and_idle_connections_are_cut_off_and_others_still_get_answers(
    server_command: str, tmp_path: Path, home: Path
) -> None:
    with http_server(server_command, tmp_path) as server:
        address = urlsplit(server.url)
        assert address.hostname is not None and address.port is not None
        slow = await anyio.connect_tcp(address.hostname, address.port)
        idle = await anyio.connect_tcp(address.hostname, address.port)
        head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 100
        with anyio.fail_after(CUT_OFF_BOUND_SECONDS):
            async with anyio.create_task_group() as group:
                group.start_soon(_trickle, slow, head)
                await _closed_by_server(slow)
                await _closed_by_server(idle)
                group.cancel_scope.cancel()
        await slow.aclose()
        await idle.aclose()
        token = (home / TOKEN_FILE).read_text().strip()
        headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(server.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 200
