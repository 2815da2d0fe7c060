"""Disk use of a capped log while no server runs.

1. A `keep_running` task runs `yes` under a 1 MiB (then the default 64 MiB) cap; its client
   leaves, so its server exits; the log's allocated blocks are sampled every 2 ms for a few
   seconds while only the task's runner caps it. The runner's CPU over the same seconds is
   the price. The baseline is the cap itself.
2. A server is SIGKILLed while its (plain) task runs `yes` under a 1 MiB cap; the task writes
   on, and the dead server's capping process caps its log until it ends: sampled as in 1, with
   the capping process's CPU.
3. A server is SIGKILLed with its capping process (nothing of it left, as after a reboot) while
   its task writes about 20 MB/s under a 1 MiB cap; the task writes on until its log takes 64
   MiB; then the next server starts. What the log takes once that server answers, against the cap.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psutil
from _harness import HOME_ENV, Figure, kill_all, main, processes_of, server_command, spread
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

NAME = "caps with no server"
CAP = 1024 * 1024
SAMPLE_INTERVAL = 0.002
GROWN = 64 * CAP
THROTTLED_WRITER = "while :; do head -c 1048576 /dev/zero | tr '\\0' y; sleep 0.05; done"


@contextlib.asynccontextmanager
async def _connected(home: Path) -> AsyncIterator[Client]:
    command = server_command()
    params = StdioServerParameters(
        command=command[0], args=command[1:], env={HOME_ENV: str(home), "PATH": os.environ["PATH"]}
    )
    with open(os.devnull, "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield client


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    content: dict[str, Any] | None = result.structured_content
    if result.is_error or content is None:
        raise RuntimeError(f"{tool}({arguments}) failed")
    return content


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def _keep_running(cap: int, seconds: float) -> list[Figure]:
    label = f"{cap // CAP} MiB"
    with tempfile.TemporaryDirectory(prefix="bench-backgroundr-") as tmp:
        home = Path(tmp)
        try:
            async with _connected(home) as client:
                task = await _call(client, "run_background_task", command="yes", keep_running=True, max_log_bytes=cap)
            samples, cpu, written = await _sampled(Path(task["log_path"]), psutil.Process(task["pid"]), seconds)
        finally:
            kill_all(processes_of(home))
    return _capped_figures(f"keep_running `yes`, no server ({label})", "runner", samples, cap, cpu, written, seconds)


async def _sampled(log: Path, capper: psutil.Process, seconds: float) -> tuple[list[int], float, int]:
    """``log``'s allocated bytes every SAMPLE_INTERVAL for ``seconds``, the CPU ``capper`` used
    meanwhile, and the bytes written by the end."""
    cpu_before = sum(capper.cpu_times()[:2])
    samples: list[int] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        samples.append(_allocated(log))
        await anyio.sleep(SAMPLE_INTERVAL)
    return samples, sum(capper.cpu_times()[:2]) - cpu_before, os.stat(log).st_size


def _capped_figures(
    label: str, capper: str, samples: list[int], cap: int, cpu: float, written: int, seconds: float
) -> list[Figure]:
    median, shown = spread(samples, cap)
    return [
        Figure(
            NAME,
            f"{label}: allocated / cap, {len(samples)} samples over {seconds:g} s",
            f"{shown}; {written / 1e9:.1f} GB written meanwhile",
            "stays near the cap",
            median <= 16 * cap,
        ),
        Figure(NAME, f"{capper} CPU while capping ({label})", f"{cpu:.2f} CPU s over {seconds:g} s"),
    ]


async def _killed_server(client: Client, command: str, capping_too: bool) -> tuple[dict[str, Any], psutil.Process]:
    """A task started with ``command`` under a 1 MiB cap, and its server SIGKILLed (with its
    capping process when ``capping_too``); answers the task and the capping process."""
    task = await _call(client, "run_background_task", command=command, max_log_bytes=CAP)
    server = psutil.Process(psutil.Process(task["pid"]).ppid())
    capping = next(c for c in server.children() if "mcp_backgroundr.logs.capping" in c.cmdline())
    if capping_too:
        capping.kill()
    server.kill()
    with anyio.fail_after(10):  # gone (its parent, the client, reaps it)
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
            await anyio.sleep(0.01)
    return task, capping


async def _plain_after_sigkill(seconds: float) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-backgroundr-") as tmp:
        home = Path(tmp)
        try:
            async with _connected(home) as client:
                task, capping = await _killed_server(client, "yes", capping_too=False)
            samples, cpu, written = await _sampled(Path(task["log_path"]), capping, seconds)
        finally:
            kill_all(processes_of(home))
    label = "a SIGKILLed server's plain `yes` (1 MiB)"
    return _capped_figures(label, "its capping process", samples, CAP, cpu, written, seconds)


async def _after_sigkill() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-backgroundr-") as tmp:
        home = Path(tmp)
        try:
            async with _connected(home) as client:
                task, _ = await _killed_server(client, THROTTLED_WRITER, capping_too=True)
            log = Path(task["log_path"])
            with anyio.fail_after(60):
                while _allocated(log) < GROWN:
                    await anyio.sleep(0.01)
            before = _allocated(log)
            began = time.perf_counter()
            async with _connected(home) as client:
                await _call(client, "list_tasks")
                started, after = time.perf_counter() - began, _allocated(log)
        finally:
            kill_all(processes_of(home))
    return [
        Figure(
            NAME,
            "log of a task of a SIGKILLed server and capping process (1 MiB cap), when the next server answers",
            f"{after / CAP:.2f}x the cap (it took {before / CAP:.0f}x before); that server answered "
            f"{started:.2f} s after its start",
            "at most the cap",
            after <= CAP,
        )
    ]


async def measure(quick: bool) -> list[Figure]:
    seconds = 2.0 if quick else 5.0
    figures = [figure for cap in (CAP, 64 * CAP) for figure in await _keep_running(cap, seconds)]
    return figures + await _plain_after_sigkill(seconds) + await _after_sigkill()


if __name__ == "__main__":
    main(measure)
