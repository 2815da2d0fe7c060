"""HTTP against stdio: the latency of one call on a reused connection, for both protocol eras,
and how many calls a second one HTTP server answers to 1, 10 and 50 clients.

Latency: ``get_task_status lines=0`` on a running task, timed on stdio and over Streamable
HTTP with the client on the 2025 handshake (``mode="legacy"``) and on 2026-07-28 (discover),
each on one reused HTTP connection. Throughput: each client loops run_background_task(`true`)
→ get_task_status → end_background_task for a few seconds; every call counts.

    python bench/http_latency.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
from _harness import HOME_ENV, Figure, main, ms, serve, server_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import TextContent

NAME = "HTTP vs stdio"
START_SECONDS = 20.0
CALL_TIMEOUT = 60.0
ERAS = {"2025-11-25 (handshake)": "legacy", "2026-07-28 (discover)": "auto"}
CLIENT_COUNTS = (1, 10, 50)


@contextlib.contextmanager
def _http_server() -> Iterator[str]:
    """``serve --http 127.0.0.1:0 --no-auth`` in a fresh state directory; its URL."""
    with tempfile.TemporaryDirectory(prefix="bench-backgroundr-http-") as tmp:
        stderr = Path(tmp) / "server.err"
        env = os.environ | {HOME_ENV: str(Path(tmp) / "home")}
        with stderr.open("wb") as sink:
            server = subprocess.Popen(
                [*server_command(), "serve", "--http", "127.0.0.1:0", "--no-auth"],
                stdin=subprocess.DEVNULL,
                stderr=sink,
                env=env,
            )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not (found := re.search(r"Streamable HTTP at (http://\S+)", stderr.read_text())):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the HTTP server did not start: {stderr.read_text()}")
                time.sleep(0.02)
            yield found.group(1)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.asynccontextmanager
async def _client(url: str, mode: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client() as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=CALL_TIMEOUT) as client,
    ):
        yield client


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        block = result.content[0] if result.content else None
        raise RuntimeError(f"{tool} failed: {block.text if isinstance(block, TextContent) else block}")
    content: dict[str, Any] = result.structured_content
    return content


async def _latencies(client: Client, task_id: str, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        await _call(client, "get_task_status", task_id=task_id, lines=0)
        times.append(time.perf_counter() - began)
    return sorted(times)


async def _stdio_latency(calls: int) -> list[float]:
    async with serve() as server:
        task = await server.call("run_background_task", command="sleep 600")
        await _latencies(server.client, task["task_id"], 10)
        return await _latencies(server.client, task["task_id"], calls)


async def _http_latency(url: str, mode: str, calls: int) -> list[float]:
    async with _client(url, mode) as client:
        task = await _call(client, "run_background_task", command="sleep 600")
        await _latencies(client, task["task_id"], 10)
        found = await _latencies(client, task["task_id"], calls)
        await _call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
        return found


async def _throughput(url: str, clients: int, seconds: float) -> tuple[float, float]:
    """Calls per second and p99 call latency with ``clients`` clients looping run → status → end
    for ``seconds``, timed once every client has connected (sessions are set up first)."""
    times: list[float] = []
    connected = 0
    all_connected = anyio.Event()
    window: list[float] = []

    async def one_client() -> None:
        nonlocal connected
        async with _client(url, "legacy") as client:
            connected += 1
            if connected == clients:
                window.append(time.monotonic())
                all_connected.set()
            await all_connected.wait()
            stop = window[0] + seconds
            while time.monotonic() < stop:
                began = time.perf_counter()
                task = await _call(client, "run_background_task", command="true")
                times.append(time.perf_counter() - began)
                for tool, arguments in (("get_task_status", {"lines": 0}), ("end_background_task", {})):
                    began = time.perf_counter()
                    await _call(client, tool, task_id=task["task_id"], **arguments)
                    times.append(time.perf_counter() - began)
            window.append(time.monotonic())

    async with anyio.create_task_group() as group:
        for _ in range(clients):
            group.start_soon(one_client)
    return len(times) / (max(window) - window[0]), _p99(sorted(times))


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def measure(quick: bool) -> list[Figure]:
    calls = 50 if quick else 200
    stdio = await _stdio_latency(calls)
    stdio_median = stdio[len(stdio) // 2]
    figures = [Figure(NAME, f"stdio get_task_status, median of {calls}", ms(stdio_median))]
    with _http_server() as url:
        for era, mode in ERAS.items():
            found = await _http_latency(url, mode, calls)
            median = found[len(found) // 2]
            figures.append(
                Figure(
                    NAME,
                    f"HTTP {era}, reused connection / stdio, median of {calls}",
                    f"{median / stdio_median:.2f}x ({ms(median)} vs {ms(stdio_median)}; p99 {ms(_p99(found))})",
                    "no Nagle delay (~40 ms)",
                    median < stdio_median + 0.02,
                )
            )
        for clients in CLIENT_COUNTS:
            rate, p99 = await _throughput(url, clients, 3.0 if quick else 10.0)
            figures.append(
                Figure(NAME, f"{clients} HTTP clients, run → status → end", f"{rate:.0f} calls/s, p99 {ms(p99)}")
            )
    return figures


if __name__ == "__main__":
    main(measure)
