"""Shared benchmark plumbing: launch the real server over stdio, call its tools, time, clean up.

Every benchmark talks to the installed ``mcp-backgroundr`` console script (the one beside
``sys.executable``) through the official SDK client, with a private ``MCP_BACKGROUNDR_HOME``.
Every wait is bounded. Leaving :func:`serve` closes the client (the server then ends its
tasks), waits for every process of the run to be gone, and kills and reports any that is not.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolRequest, CallToolRequestParams, TextContent
from pydantic import BaseModel, ConfigDict

HOME_ENV = "MCP_BACKGROUNDR_HOME"
BENCH_DIR = Path(__file__).resolve().parent
GIB = 1024**3
UNCAPPED = {"MCP_BACKGROUNDR_MAX_LOG_BYTES": str(4 * GIB)}
"""Server settings under which a 1 GiB log stays under its cap, so nothing is dropped: the data
path alone. What capping costs is measured by log_cap.py."""

CALL_TIMEOUT = 60.0
"""Longest any single tool call may take before the benchmark fails."""
POLL_INTERVAL = 0.01
"""How often a client without a wait tool polls get_task_status to see an exit."""
GONE_TIMEOUT = 10.0
"""How long the processes of a run get to disappear after the client closes."""


class _RawAnswer(BaseModel):
    """Any tool answer, its fields kept as parsed JSON."""

    model_config = ConfigDict(extra="allow")


def server_command() -> list[str]:
    """The installed console script, as an MCP client would launch it."""
    script = Path(sys.executable).with_name("mcp-backgroundr")
    if not script.exists():
        raise SystemExit(f"{script} not found: install mcp-backgroundr into this Python's environment")
    return [str(script)]


def bare_server_command() -> list[str]:
    """The baseline: a bare MCPServer with one tool, on the same Python."""
    return [sys.executable, str(BENCH_DIR / "bare_server.py")]


@dataclass
class Figure:
    """One line of the results table."""

    benchmark: str
    figure: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Closing:
    """What leaving :func:`serve` observed, timed from the moment the client started closing."""

    server_exited_s: float
    """Until the client saw the server process exit (the SDK polls for it every 10 ms)."""
    all_gone_s: float
    """Until the server and every task process were gone (zombies count as gone)."""
    server_log: str


@dataclass
class Server:
    """A connected client, its server's state directory, and the tasks it started."""

    client: Client
    home: Path
    stderr_path: Path
    closing: Closing | None = None

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; return its structured answer."""
        result = await self.client.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)
        if result.is_error:
            block = result.content[0] if result.content else None
            raise RuntimeError(f"{tool}({arguments}) failed: {block.text if isinstance(block, TextContent) else block}")
        content: dict[str, Any] | None = result.structured_content
        if content is None:
            raise RuntimeError(f"{tool} answered without structured content")
        return content

    async def call_raw(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The same request, with the answer parsed only as JSON: no CallToolResult model, no
        output-schema validation in the client. Isolates the server's share of a call's latency."""
        request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=arguments))
        answer = await self.client.session.send_request(request, _RawAnswer, request_read_timeout_seconds=CALL_TIMEOUT)
        return answer.model_extra or {}

    async def start(self, command: str) -> dict[str, Any]:
        return await self.call("run_background_task", command=command)

    async def wait_exit(self, task_id: str, limit: float, interval: float = POLL_INTERVAL) -> dict[str, Any]:
        """Poll get_task_status (lines=0) every ``interval`` until the task is no longer running,
        for at most ``limit`` seconds."""
        with anyio.fail_after(limit):
            while True:
                status = await self.call("get_task_status", task_id=task_id, lines=0)
                if status["state"] != "running":
                    return status
                await anyio.sleep(interval)

    def process(self) -> psutil.Process:
        """The server process: the child of this process whose environment names this state
        directory (the parent of every task of it)."""
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.environ().get(HOME_ENV) == str(self.home):
                    return child
        raise RuntimeError(f"no server process for {self.home} among this process's children")

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the server and its helper processes (the capping process:
        a child that carries the server's environment, which tasks do not), so far."""
        server = self.process()
        helpers = []
        with contextlib.suppress(psutil.Error):
            helpers = [child for child in server.children() if _environ(child).get(HOME_ENV) == str(self.home)]
        total = 0.0
        for process in (server, *helpers):
            with contextlib.suppress(psutil.Error):
                total += sum(process.cpu_times()[:2])
        return total

    def remove_log(self, task_id: str) -> None:
        """Delete a (big) finished task's log to free the disk."""
        (self.home / "logs" / f"{task_id}.log").unlink(missing_ok=True)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except psutil.Error:
        return {}


def processes_of(home: Path) -> list[psutil.Process]:
    """Live processes started for this state directory: the server and every task process (its
    descendants: tasks do not inherit the server's settings, so they are found by parentage)."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["environ"], ad_value=None):
        environ = process.info.get("environ") or {}
        if process.pid != os.getpid() and environ.get(HOME_ENV) == str(home) and _alive(process):
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                found.update((child.pid, child) for child in process.children(recursive=True) if _alive(child))
    return list(found.values())


def _wait_gone(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.002)
        alive = [p for p in alive if _alive(p)]
    return alive


def kill_all(processes: Sequence[psutil.Process]) -> list[str]:
    """SIGKILL them; describe each (pid and the start of its command line)."""
    described = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} {' '.join(process.cmdline())[:80]}")
            process.kill()
    psutil.wait_procs(list(processes), timeout=5)
    return described


@contextlib.asynccontextmanager
async def serve(command: list[str] | None = None, env: dict[str, str] | None = None) -> AsyncIterator[Server]:
    """Launch a server in a fresh state directory and connect the SDK's stdio client to it.

    On leaving, the client closes the server's stdin (the SDK waits up to 2 s for it to exit,
    then kills it); then every process of the run must be gone within GONE_TIMEOUT, else it is
    killed and the benchmark fails. ``server.closing`` then holds the timings.
    """
    command = command or server_command()
    with tempfile.TemporaryDirectory(prefix="bench-backgroundr-") as tmp:
        home = Path(tmp) / "home"
        stderr_path = Path(tmp) / "server.stderr"
        params = StdioServerParameters(
            command=command[0], args=command[1:], env={HOME_ENV: str(home), "PATH": os.environ["PATH"], **(env or {})}
        )
        with stderr_path.open("w") as errlog:
            try:
                async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT) as client:
                    server = Server(client, home, stderr_path)
                    try:
                        yield server
                    finally:
                        processes = processes_of(home)
                        closing_started = time.perf_counter()
                server_exited = time.perf_counter()
                remaining = _wait_gone(processes, GONE_TIMEOUT)
                all_gone = time.perf_counter()
                if remaining:
                    raise RuntimeError(
                        f"{len(remaining)} processes were still alive {GONE_TIMEOUT:g} s after the client closed, "
                        "and were killed: " + ", ".join(kill_all(remaining))
                    )
                server.closing = Closing(
                    server_exited_s=server_exited - closing_started,
                    all_gone_s=all_gone - closing_started,
                    server_log=stderr_path.read_text(errors="replace"),
                )
            finally:
                stray = processes_of(home)
                if stray:
                    killed = ", ".join(kill_all(stray))
                    raise RuntimeError(f"processes outlived the benchmark and were killed: {killed}")


class Sampler:
    """Samples a process's RSS in a thread every ``interval`` seconds."""

    def __init__(self, process: psutil.Process, interval: float = 0.002) -> None:
        self.process = process
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    """Seconds one awaited action takes."""
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(samples: Sequence[float], base: float) -> tuple[float, str]:
    """The median of ``samples`` and "median, p90, worst" of them, each as a multiple of ``base``."""
    ordered = sorted(samples)
    middle, p90, peak = statistics.median(ordered), ordered[int(len(ordered) * 0.9)], ordered[-1]
    return middle, f"median {middle / base:.2f}x, p90 {p90 / base:.2f}x, worst {peak / base:.2f}x"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def print_table(figures: Sequence[Figure]) -> None:
    """The results as a Markdown table."""
    print("| benchmark | figure | value | target | met |")
    print("| --- | --- | --- | --- | --- |")
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "**NO**")
        print(f"| {f.benchmark} | {f.figure} | {f.value} | {f.target} | {met} |")


Measure = Callable[[bool], Awaitable[list[Figure]]]


def main(measure: Measure) -> None:
    """Run one benchmark module on its own: ``python bench/<module>.py [--quick]``."""
    quick = "--quick" in sys.argv[1:]

    async def run() -> list[Figure]:
        return await measure(quick)

    print_table(anyio.run(run))
