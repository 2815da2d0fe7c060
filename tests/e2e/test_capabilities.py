"""The capabilities a client is told are what it is served, over stdio and HTTP alike.

On the 2025 handshake the SDK's ``MCPServer`` delivers no change notifications and serves no
``resources/subscribe``, so ``listChanged`` and ``subscribe`` are false; on 2026-07-28
(``server/discover``) they come through ``subscriptions/listen``, so they are true. A client
pinned to 2026-07-28 does not ask: the SDK client fills in empty capabilities itself
(docs/conformance.md cites the code).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from .harness import http_server, server_parameters

pytestmark = pytest.mark.anyio

HANDSHAKE = {"listChanged": False}
DISCOVERED = {"listChanged": True}
EXPECTED: dict[str, dict[str, Any]] = {
    "legacy": {"prompts": HANDSHAKE, "resources": HANDSHAKE | {"subscribe": False}, "tools": HANDSHAKE},
    "auto": {"prompts": DISCOVERED, "resources": DISCOVERED | {"subscribe": True}, "tools": DISCOVERED},
    "2026-07-28": {},
}


def _seen(client: Client) -> dict[str, Any]:
    capabilities = client.server_capabilities
    return capabilities.model_dump(by_alias=True, exclude_none=True) if capabilities else {}


@contextlib.asynccontextmanager
async def _over_stdio(command: str, mode: Any) -> AsyncIterator[Client]:
    with open(os.devnull, "w") as log:
        async with Client(stdio_client(server_parameters(command), errlog=log), mode=mode) as client:
            yield client


async def test_capabilities_are_the_same_over_stdio_and_http_for_each_protocol(
    server_command: str, tmp_path: Path
) -> None:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    with http_server(server_command, tmp_path, "--no-auth") as server:
        for mode in EXPECTED:
            async with _over_stdio(server_command, mode) as client:
                seen["stdio", mode] = _seen(client)
            async with (
                create_mcp_http_client() as http,
                Client(streamable_http_client(server.url, http_client=http), mode=mode) as client,
            ):
                seen["http", mode] = _seen(client)
    assert seen == {(way, mode): expected for way in ("stdio", "http") for mode, expected in EXPECTED.items()}
