"""The official TypeScript SDK clients, 1.x (@modelcontextprotocol/sdk) and 2.x
(@modelcontextprotocol/client), drive every tool over stdio and over HTTP with the token.

``ts_client.mjs`` lets the SDK validate every structured answer against its output schema
and checks what issue 12 says a client sees: nulls, numbers for text, enum spellings, argv
commands, ids, waits longer than the client's timeout without and with progress, and over
stdio input and removal across servers. The no-progress cap is lowered for the run (the
client's timeout with it), so the long waits take seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from mcp_backgroundr.config import UNATTENDED_WAIT_ENV
from mcp_backgroundr.serving.access import TOKEN_FILE

from ..e2e.harness import http_server
from .npm_tools import NpmTools

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(900)]

CLIENT_RUN_SECONDS = 180
LOWERED_CAP = {UNATTENDED_WAIT_ENV: "1"}
SDK_VERSIONS = ["v1", "v2"]


async def drive(npm_tools: NpmTools, version: str, *target: str) -> None:
    with anyio.fail_after(CLIENT_RUN_SECONDS):
        result = await anyio.run_process(
            [*npm_tools.typescript_client(version), *target], check=False, env=os.environ | LOWERED_CAP
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output[-3000:]
    assert "all checks passed" in output


@pytest.mark.parametrize("version", SDK_VERSIONS)
async def test_typescript_sdk_over_stdio(npm_tools: NpmTools, server_command: str, version: str) -> None:
    await drive(npm_tools, version, "stdio", server_command)


@pytest.mark.parametrize("version", SDK_VERSIONS)
async def test_typescript_sdk_over_http_with_the_token(
    npm_tools: NpmTools, server_command: str, tmp_path: Path, home: Path, version: str
) -> None:
    with http_server(server_command, tmp_path, env=LOWERED_CAP) as server:
        token = (home / TOKEN_FILE).read_text().strip()
        await drive(npm_tools, version, "http", server.url, token)
