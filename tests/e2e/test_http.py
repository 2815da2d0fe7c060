"""``serve --http``: one server for many clients, locked down by a bearer token and Host/Origin checks."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mcp_backgroundr.config import TOKEN_ENV
from mcp_backgroundr.serving.access import TOKEN_FILE

from .harness import HttpServer, alive, call, connect_http, finished, http_server

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
REQUEST_SECONDS = 10.0


@pytest.fixture
def served(server_command: str, tmp_path: Path) -> Iterator[HttpServer]:
    with http_server(server_command, tmp_path) as server:
        yield server


def stored_token(home: Path) -> str:
    return (home / TOKEN_FILE).read_text().strip()


def resolves(name: str) -> bool:
    try:
        return bool(socket.getaddrinfo(name, None))
    except OSError:
        return False


async def initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=REQUEST_SECONDS) as http:
        return await http.post(url, json=INITIALIZE, headers=JSON_HEADERS | headers)


async def test_a_request_without_the_token_gets_401_with_a_bearer_challenge(served: HttpServer) -> None:
    response = await initialize(served.url, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


async def test_a_wrong_token_gets_401(served: HttpServer, home: Path) -> None:
    wrong = stored_token(home)[:-1] + "x"
    response = await initialize(served.url, {"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401


async def test_a_page_of_another_origin_gets_403_with_or_without_the_token(served: HttpServer, home: Path) -> None:
    foreign = {"Origin": "http://attacker.example"}
    assert (await initialize(served.url, foreign)).status_code == 403
    token = {"Authorization": f"Bearer {stored_token(home)}"}
    assert (await initialize(served.url, foreign | token)).status_code == 403


async def test_a_rebound_host_name_is_refused(served: HttpServer, home: Path) -> None:
    rebound = {"Host": "attacker.example", "Authorization": f"Bearer {stored_token(home)}"}
    assert (await initialize(served.url, rebound)).status_code == 421


async def test_the_token_is_generated_private_and_never_printed(served: HttpServer, home: Path) -> None:
    token = stored_token(home)
    response = await initialize(served.url, {"Authorization": f"Bearer {token}", "Origin": "http://localhost:3000"})
    assert response.status_code == 200
    assert stat.S_IMODE((home / TOKEN_FILE).stat().st_mode) == 0o600
    assert token not in served.output()
    assert "Authorization" in served.output() and served.url in served.output()


async def test_a_token_from_the_environment_replaces_the_file(server_command: str, tmp_path: Path, home: Path) -> None:
    token = "a-token-chosen-by-the-user-1234"
    with http_server(server_command, tmp_path, env={TOKEN_ENV: token}) as server:
        async with connect_http(server.url, token) as client:
            assert (await client.list_tools()).tools
            started = await call(client, "run_background_task", command="env")
            environment = (await finished(client, started["task_id"]))["output"]
            assert "\nPATH=" in "\n" + environment
            assert "MCP_BACKGROUNDR_HOME=" not in environment, "a task inherited the server's settings"
            assert token not in environment, "a task inherited the server's token"
        assert (await initialize(server.url, {"Authorization": "Bearer other-token-of-some-length"})).status_code == 401
    assert not (home / TOKEN_FILE).exists()


async def test_a_task_outlives_its_client_and_another_client_ends_it(served: HttpServer, home: Path) -> None:
    token = stored_token(home)
    async with connect_http(served.url, token) as first:
        started = await call(first, "run_background_task", command="sleep 300")
    async with connect_http(served.url, token) as second:
        listed = await call(second, "list_tasks")
        assert [t["task_id"] for t in listed["tasks"]] == [started["task_id"]]
        assert listed["tasks"][0]["state"] == "running" and alive([started["pid"]])
        ended = await call(second, "end_background_task", task_id=started["task_id"])
    assert ended["state"] == "killed" and ended["survivors"] == []
    assert not alive([started["pid"]])


async def test_sigterm_ends_the_server_and_its_tasks(server_command: str, tmp_path: Path, home: Path) -> None:
    with http_server(server_command, tmp_path) as server:
        async with connect_http(server.url, stored_token(home)) as client:
            started = await call(client, "run_background_task", command="sleep 300")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(REQUEST_SECONDS) == 0
        assert not alive([started["pid"]])
        assert "SIGTERM received; ended 1 task(s)" in server.output()


async def test_no_auth_on_loopback_warns_and_serves(server_command: str, tmp_path: Path) -> None:
    with http_server(server_command, tmp_path, "--no-auth") as server:
        async with connect_http(server.url, None) as client:
            assert (await client.list_tools()).tools
        assert "warning: --no-auth" in server.output()


async def test_binding_beyond_loopback_needs_allow_remote_and_the_token(server_command: str, tmp_path: Path) -> None:
    def refusal(*flags: str) -> str:
        result = subprocess.run(
            [server_command, "serve", "--http", "0.0.0.0:0", *flags],
            capture_output=True,
            text=True,
            timeout=REQUEST_SECONDS * 3,
            env=os.environ,
        )
        assert result.returncode == 1, result
        return result.stderr

    assert "--allow-remote" in refusal()
    assert "--no-auth is refused off loopback" in refusal("--allow-remote", "--no-auth")
    with http_server(server_command, tmp_path, "--allow-remote", address="0.0.0.0:0") as server:
        assert "warning: serving beyond this machine" in server.output()
        assert server.url.startswith(f"http://{socket.gethostname()}:")
        if resolves(socket.gethostname()):
            assert (await initialize(server.url, {})).status_code == 401  # the printed URL is one that answers
        port = server.url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert (await initialize(local, {"Host": "attacker.example"})).status_code == 421
        assert (await initialize(local, {})).status_code == 401
