"""Remote tasks over SSH: status and start latency, and the wake-up of a wait after a remote exit.

A real sshd (the tests' fixture, ``tests/e2e/sshd.py``) on a loopback port stands in for
the remote host, so the figures are what SSH, the multiplexed connection and the agent cost,
without a network. Baselines measured in the same run: the same call on a local task, and a
plain ``ssh HOST true`` over the same multiplexed connection (the floor for any remote call).
The wake-up is the time from the remote task's last output (a ``date +%s.%N`` timestamp,
printed just before it exits) to the client holding the wait's answer. The log cap: `yes` under a
1 MiB cap on the host (its runner caps it there) and here (the server caps it), the disk its log
takes while it writes (sampled every few ms) and once it has been ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from _harness import BENCH_DIR, Figure, Server, main, median, ms, serve, server_command, spread, timed

sys.path.insert(0, str(BENCH_DIR.parent))
from tests.e2e.sshd import missing, running_sshd

from mcp_backgroundr.remote.ssh import CONFIG_ENV, Connections, parse_destination

NAME = "remote task (ssh, loopback sshd)"
HOST = "bench"
WAIT_LIMIT = 30.0
WARM_UP = 3
CAP = 1024 * 1024
CAP_SAMPLE_SECONDS = 0.005


async def _median(action: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(WARM_UP):
        await action()
    return median([await timed(action) for _ in range(calls)])


def _plain_ssh(home: Path) -> float:
    """One ``ssh HOST true`` over the server's own multiplexed connection."""
    connections = Connections(home)
    destination = parse_destination(HOST)
    argv = ["ssh", *connections.options(destination), "-o", "ControlMaster=no", destination.target, "true"]
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=30)
    return time.perf_counter() - started


async def _wake_up(server: Server, host: str | None) -> float:
    where = {"host": host} if host else {}
    task = await server.call("run_background_task", command="sleep 1; date +%s.%N", **where)
    result = await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=WAIT_LIMIT, since=0)
    received = time.time()
    if result["reason"] != "exited":
        raise RuntimeError(f"wait ended with {result['reason']}: {result}")
    printed = float(result["status"]["output"].strip().splitlines()[-1])
    await server.call("remove_task", task_id=task["task_id"])
    return received - printed


async def _capped_yes(server: Server, host: str | None, seconds: float) -> tuple[list[int], int, int]:
    """`yes` under a 1 MiB cap for ``seconds``: the disk its log took meanwhile (samples), its size,
    and the disk it takes once the task has been ended (its runner's, or the server's, last look)."""
    where = {"host": host} if host else {}
    task = await server.call("run_background_task", command="yes", max_log_bytes=CAP, **where)
    log = Path(task["log_path"])  # the "host" is this machine: its log can be looked at here
    samples: list[int] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        samples.append(os.stat(log).st_blocks * 512)
        await anyio.sleep(CAP_SAMPLE_SECONDS)
    await server.call("end_background_task", task_id=task["task_id"], grace_seconds=1)
    written, left = os.stat(log).st_size, os.stat(log).st_blocks * 512
    await server.call("remove_task", task_id=task["task_id"])
    return samples, written, left


async def _log_cap(server: Server, seconds: float) -> Figure:
    remote, remote_written, remote_left = await _capped_yes(server, HOST, seconds)
    local, local_written, local_left = await _capped_yes(server, None, seconds)
    return Figure(
        NAME,
        f"`yes` under a 1 MiB cap for {seconds:g} s: disk its log takes / cap, while written and after the end",
        f"remote {spread(remote, CAP)[1]}, {remote_left / CAP:.2f}x after ({remote_written / 1e9:.1f} GB written); "
        f"local {spread(local, CAP)[1]}, {local_left / CAP:.2f}x after ({local_written / 1e9:.1f} GB written)",
    )


async def _measure(server: Server, calls: int) -> list[Figure]:
    local = await server.call("run_background_task", command="sleep 300")
    remote = await server.call("run_background_task", command="sleep 300", host=HOST)

    def status(task_id: str) -> Callable[[], Awaitable[object]]:
        return lambda: server.call("get_task_status", task_id=task_id, lines=10)

    async def start(host: str | None) -> None:
        where = {"host": host} if host else {}
        task = await server.call("run_background_task", command="true", **where)
        await server.call("wait_for_task", task_id=task["task_id"], timeout_seconds=WAIT_LIMIT)
        await server.call("remove_task", task_id=task["task_id"])

    local_status = await _median(status(local["task_id"]), calls)
    remote_status = await _median(status(remote["task_id"]), calls)
    plain = median([_plain_ssh(server.home) for _ in range(calls)])
    local_start = await _median(lambda: server.call("run_background_task", command="true"), calls)
    remote_start = await _median(lambda: server.call("run_background_task", command="true", host=HOST), calls)
    local_wake = median([await _wake_up(server, None) for _ in range(max(5, calls // 3))])
    remote_wake = median([await _wake_up(server, HOST) for _ in range(max(5, calls // 3))])
    for task in (local, remote):
        await server.call("end_background_task", task_id=task["task_id"], grace_seconds=0)
    return [
        Figure(NAME, f"plain `ssh {HOST} true` over the multiplexed connection, median of {calls}", ms(plain)),
        Figure(
            NAME,
            f"get_task_status lines=10, median of {calls}",
            f"remote {ms(remote_status)} = {remote_status / local_status:.1f}x local ({ms(local_status)}), "
            f"{remote_status / plain:.2f}x plain ssh",
        ),
        Figure(
            NAME,
            f"run_background_task, median of {calls}",
            f"remote {ms(remote_start)} = {remote_start / local_start:.1f}x local ({ms(local_start)}), "
            f"{remote_start / plain:.2f}x plain ssh",
        ),
        Figure(
            NAME,
            "wait_for_task wake-up after the task's exit (from its last output to the answer), median",
            f"remote {ms(remote_wake)} vs local {ms(local_wake)} ({remote_wake / local_wake:.1f}x)",
        ),
    ]


async def measure(quick: bool) -> list[Figure]:
    reason = missing()
    if reason:
        return [Figure(NAME, "skipped", reason)]
    calls = 10 if quick else 30
    command = [*server_command(), "serve", "--allowed-ssh-host", HOST]
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp, running_sshd(Path(tmp) / "sshd") as sshd:
        config = Path(tmp) / "ssh_config"
        async with serve(command, env={CONFIG_ENV: str(config)}) as server:
            config.write_text(sshd.client_config(server.home, HOST))
            os.environ[CONFIG_ENV] = str(config)  # for the plain ssh baseline
            return [*await _measure(server, calls), await _log_cap(server, 5.0 if quick else 15.0)]


if __name__ == "__main__":
    main(measure)
