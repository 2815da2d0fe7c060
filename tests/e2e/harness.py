"""Drive the installed mcp-backgroundr through the official SDK's stdio client."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import psutil
import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import INVALID_REQUEST, CallToolResult, TextContent

from mcp_backgroundr.config import HOME_ENV, PLATFORM_ENV
from mcp_backgroundr.platform.containment import _cgroup as cgroups

SERVER_START_SECONDS = 20.0
SERVER_STOP_SECONDS = 10.0
CLI_SECONDS = 30.0


def server_parameters(
    command: str, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> StdioServerParameters:
    """Launch parameters carrying the test's state directory, PATH and platform backend."""
    base = {HOME_ENV: os.environ[HOME_ENV], "PATH": os.environ["PATH"]}
    if PLATFORM_ENV in os.environ:
        base[PLATFORM_ENV] = os.environ[PLATFORM_ENV]
    return StdioServerParameters(command=command, args=list(args), env=base | (env or {}))


@contextlib.asynccontextmanager
async def connect(
    command: str, errlog: TextIO | None = None, args: Sequence[str] = (), env: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """A client session with a fresh server (given ``args`` and ``env``); leaving it closes the server's stdin."""
    with contextlib.ExitStack() as stack:
        log = errlog or stack.enter_context(open(os.devnull, "w"))
        async with Client(stdio_client(server_parameters(command, env, args), errlog=log)) as client:
            yield client


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured answer."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its one-line error."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) did not fail: {text_of(result)}"
    message = text_of(result)
    assert "\n" not in message and "Traceback" not in message, message
    return message


async def call_refused_unread(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool with arguments too heavy to be read (tools/weighing.py); return the one-line
    JSON-RPC error the message got instead of an answer."""
    with pytest.raises(MCPError) as refused:
        await client.call_tool(tool, arguments)
    message = refused.value.error.message
    assert refused.value.error.code == INVALID_REQUEST and "is not read" in message and "\n" not in message, message
    return message


TERM_NOTING_LEFTOVER = """\
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: pathlib.Path(sys.argv[1]).touch())
pathlib.Path(sys.argv[2]).touch()
time.sleep(600)
"""
"""A Python script for a process a task leaves behind (``python3 SCRIPT TERMED READY &``): it touches
READY once its SIGTERM handler is in place, TERMED at a SIGTERM, and lives on until a SIGKILL."""


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Wait, bounded, until an observable condition holds."""
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.02)


async def finished(client: Client, task_id: str, **arguments: Any) -> dict[str, Any]:
    """Status of a task once its main process has exited (bounded wait)."""
    status: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal status
        status = await call(client, "get_task_status", task_id=task_id, **arguments)
        return bool(status["state"] != "running")

    await until(done)
    return status


def cli(command: str, *arguments: str, timeout: float = CLI_SECONDS) -> subprocess.CompletedProcess[str]:
    """Run the console script's human command ``arguments`` (no stdin), as a person would beside a server."""
    return subprocess.run(
        [command, *arguments], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def alive(pids: list[int]) -> list[int]:
    """The pids among ``pids`` that still run (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running


def on_a_terminal(argv: list[str], cwd: Path | None = None) -> tuple[str, bytes, int]:
    """Start the server with a terminal for stdin; return its first stderr line, then hang the
    terminal up (stdin ends) and return its stdout and exit code too."""
    controller, terminal = pty.openpty()
    server = subprocess.Popen(
        argv, cwd=cwd, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    os.close(terminal)
    try:
        assert server.stderr is not None
        hint = server.stderr.readline().decode()
    finally:
        os.close(controller)  # the terminal hangs up: stdin ends
        stdout, _ = server.communicate(timeout=10)
    return hint, stdout, server.returncode


@dataclass
class HttpServer:
    """A running ``mcp-backgroundr serve --http``: its URL, process and stderr file."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def output(self) -> str:
        return self.stderr.read_text()


def _served_url(stderr: Path, server: subprocess.Popen[bytes]) -> str:
    """The URL the server announces on stderr (bounded wait)."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"Streamable HTTP at (http://\S+)", stderr.read_text())
        if found:
            return found.group(1)
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}): {stderr.read_text()}")
        time.sleep(0.02)
    raise AssertionError(f"the server announced no URL within {SERVER_START_SECONDS} s: {stderr.read_text()}")


@contextlib.contextmanager
def http_server(
    command: str, directory: Path, *flags: str, address: str = "127.0.0.1:0", env: dict[str, str] | None = None
) -> Iterator[HttpServer]:
    """``serve --http ADDRESS`` plus ``flags``; SIGTERMed (and waited for) on the way out."""
    stderr = directory / f"server-{len(list(directory.glob('server-*')))}.err"
    with stderr.open("wb") as sink:
        server = subprocess.Popen(
            [command, "serve", "--http", address, *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ | (env or {}),
        )
    try:
        yield HttpServer(_served_url(stderr, server), server, stderr)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.asynccontextmanager
async def connect_http(url: str, token: str | None) -> AsyncIterator[Client]:
    """An MCP client over Streamable HTTP, sending ``token`` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@contextlib.contextmanager
def cgroup_directory(name: str, owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """A cgroup v2 directory made for one test (a server's MCP_BACKGROUNDR_CGROUP), given to
    ``owner`` (uid, gid) as systemd does for a Delegate=yes scope; removed with what it holds."""
    root = cgroups.v2_root()
    if root is None:
        raise AssertionError("no cgroup2 mount on this machine")
    directory = root / name
    directory.mkdir()
    try:
        if owner is not None:
            for path in (
                directory,
                *(directory / f for f in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")),
            ):
                os.chown(path, *owner)
        yield directory
    finally:
        for child in sorted(directory.iterdir(), reverse=True):
            if child.is_dir():
                child.rmdir()
        directory.rmdir()


async def kill_server_of(task_pid: int, capping_too: bool = False) -> None:
    """SIGKILL the server whose child ``task_pid`` is, and wait (bounded) until it is gone. Its
    capping process caps the logs of its tasks until they end; ``capping_too`` kills it as well
    (nothing of the server left, as after a reboot)."""
    server = psutil.Process(psutil.Process(task_pid).ppid())
    if capping_too:
        for child in server.children():
            if "mcp_backgroundr.logs.capping" in child.cmdline():
                child.kill()
    server.kill()

    def gone() -> bool:
        try:
            return server.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # reaped between two looks
            return True

    with anyio.fail_after(5):
        while not gone():
            await anyio.sleep(0.02)


def heavy_call(request_id: int | str, arrays: int = 30_000, id_last: bool = False) -> bytes:
    """A tools/call of list_tasks whose arguments hold ``arrays`` empty arrays: far more than a message
    may hold (tools/weighing.py), its id before the arguments or after them."""
    arguments = b'{"x": [' + b",".join([b"[]"] * arrays) + b"]}"
    call = b'"method": "tools/call", "params": {"name": "list_tasks", "arguments": ' + arguments + b"}"
    request = json.dumps(request_id).encode()
    if id_last:
        return b'{"jsonrpc": "2.0", ' + call + b', "id": ' + request + b"}"
    return b'{"jsonrpc": "2.0", "id": ' + request + b", " + call + b"}"


V1_FREEZER = Path("/sys/fs/cgroup/freezer")
needs_the_v1_freezer = pytest.mark.skipif(
    os.geteuid() != 0 or not (V1_FREEZER / "cgroup.procs").exists(), reason="needs the cgroup v1 freezer and root"
)
"""For a process that outlives SIGKILL (as one in uninterruptible sleep does): see :func:`held_by_the_v1_freezer`."""


@contextlib.contextmanager
def held_by_the_v1_freezer(pid: int, name: str) -> Iterator[None]:
    """Hold ``pid`` frozen in a v1 freezer cgroup of its own: every signal, SIGKILL included, waits
    until it is thawed, so the server knows the process and cannot end it (it shows as D state).
    On the way out it is thawed, and dies of the SIGKILL it was sent."""
    group = V1_FREEZER / name
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 5
        while (group / "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline, "the freezer did not freeze the task"
            time.sleep(0.01)
        yield
    finally:
        (group / "freezer.state").write_text("THAWED")
        deadline = time.monotonic() + 5
        while alive([pid]):  # a zombie counts as gone
            assert time.monotonic() < deadline, "the thawed task did not die of its SIGKILL"
            time.sleep(0.01)
        group.rmdir()
