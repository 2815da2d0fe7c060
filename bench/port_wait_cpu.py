"""Server CPU during a 10 s wait_for_task port=N that nobody listens on, per platform backend, beside
10 s idle (docs/benchmarks.md 15, port waits).

Usage: python bench/port_wait_cpu.py [SERVER]: SERVER is the mcp-backgroundr to run (default: the one
beside this Python); for another checkout, a script that runs ``python -m mcp_backgroundr`` with that
checkout's src on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

SECONDS = 10
UNUSED_PORT = 1


def _server_process() -> psutil.Process:
    return next(p for p in psutil.Process().children(recursive=True) if "mcp" in " ".join(p.cmdline()))


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _measure(server: str, platform: str) -> None:
    home = tempfile.mkdtemp(prefix="port-wait-cpu-")
    env = {"MCP_BACKGROUNDR_HOME": home, "PATH": os.environ["PATH"], "MCP_BACKGROUNDR_PLATFORM": platform}
    with open(os.devnull, "w") as quiet:
        async with Client(stdio_client(StdioServerParameters(command=server, env=env), errlog=quiet)) as client:
            started = await client.call_tool("run_background_task", {"command": "sleep 60"})
            assert started.structured_content is not None
            task_id = started.structured_content["task_id"]
            process = _server_process()
            wait = {"task_id": task_id, "port": UNUSED_PORT, "timeout_seconds": SECONDS}
            for label, arguments in (("idle", None), ("port wait", wait)):
                cpu, began = _cpu(process), time.monotonic()
                if arguments is None:
                    await anyio.sleep(SECONDS)
                else:
                    await client.call_tool("wait_for_task", arguments)
                used, lasted = _cpu(process) - cpu, time.monotonic() - began
                print(f"{platform:9s} {label:10s} server CPU {used:.3f} s over {lasted:.1f} s", flush=True)
            await client.call_tool("end_background_task", {"task_id": task_id})


async def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else str(Path(sys.executable).parent / "mcp-backgroundr")
    print(f"{len(psutil.pids())} processes on the machine")
    for platform in ("linux", "portable"):
        await _measure(server, platform)


if __name__ == "__main__":
    anyio.run(main)
