"""mcp-backgroundr side by side with other MCP servers that run commands in the background.

    python bench/peers.py [--quick] [--only SERVER ...]

The peers are installed once into a scratch directory, never as project dependencies:
``$MCP_BACKGROUNDR_BENCH_PEERS_DIR``, by default ``~/.cache/mcp-backgroundr-bench/peers``, one
directory per pinned version:

- ``@wonderwhy-er/desktop-commander`` (npm), with ``npm install --ignore-scripts`` (its
  postinstall reports the installation over the network; Puppeteer's downloads a browser);
- ``mcp-background-job`` (PyPI), in a venv of the first Python >= 3.12 found
  (``$MCP_BACKGROUNDR_BENCH_PYTHON312``, this Python, ``python3.1x`` on PATH, pyenv), else
  skipped with a note;
- ``backburner-mcp`` (PyPI), in a venv of the first Python >= 3.10 found the same way (this
  one, here).

Only the peers' own versions are pinned; the JSON record lists what pip resolved beside them.

Every server is launched by the SDK's stdio client (``Client`` + ``stdio_client``, as
``_harness.py`` does) with a private ``HOME`` in a temporary directory, and every scenario is
mapped onto each server's own tools (``MAPPINGS``; the report prints them). Per server, in one
connection: start latency, the 200 MB writes, status latency, 100 tasks, ending a tree, ending a
task that ignores SIGTERM; then fresh connections for the disconnect runs. Launch-to-tools/list
runs first, alternating the servers. Every figure is a median over repetitions in this run, given
as a ratio to mcp-backgroundr's or to a plain-shell run of the same command.

- Latency calls are spaced ``GAP`` apart (a model's calls are seconds apart); back to back,
  desktop-commander waits for the lock on its config file, where it counts every call.
- Answer sizes are the bytes of the answer's text content (what a model reads); the JSON
  record also has the size of the whole result (mcp-backgroundr repeats the output in its
  structured content, for clients that show the model that instead).
- The 200 MB write is ``yes <99 x> | head -c 200000000``. Time to completion: from the start
  call until the server reports the task finished. This process waits on a pidfd of the task's
  top process (found by its marker), then polls the server's state call every 10 ms; nothing
  polls during the write. The plain shell runs the same command as ``sh -c '{ CMD; } > file'``
  just before each server run; the ratio is the median of the per-run ratios. Peak RSS is the
  server process's own (2 ms samples), not its tasks'.
- Survivors and orphans: every task command is ``env BENCH_PEERS_MARK=<unique> sh -c '...'``,
  so every process of it carries the marker in its environment; processes are counted with
  psutil ``END_SETTLE`` s after the end call returned (the peers' own kill escalations are
  shorter) or ``ORPHAN_SETTLE`` s after the client closed (after the SDK's own 2 s wait and
  kill of the server's process group). The harness kills whatever carries a marker of the run
  at the end of each scenario and reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _harness import BENCH_DIR, HOME_ENV, Sampler, kill_all
from _peer_report import Results, human_bytes, machine, print_table, rows
from _peer_servers import (
    APPEAR_TIMEOUT,
    BIG,
    CALL_TIMEOUT,
    END_SETTLE,
    GAP,
    IGNORER,
    ORPHAN_SETTLE,
    PEERS_DIR_ENV,
    POLL,
    RUN_TIMEOUT,
    SCENARIO_TIMEOUT,
    SESSION_ENV,
    SLEEP,
    SMALL,
    SMALL_WRITER,
    TASKS,
    TREE,
    WRITE_LIMIT,
    WRITER,
    Backburner,
    BackgroundJob,
    DesktopCommander,
    Ours,
    Peer,
    Session,
    bytes_written,
    marked,
    marked_command,
    new_marker,
    of_run,
    peers_dir,
    wait_count,
    wait_pidfd,
)
from chart import render as render_chart
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

# ---------------------------------------------------------------------------------------------
# Running the scenarios


class Bench:
    def __init__(self, peers: list[Peer], quick: bool) -> None:
        self.peers = peers
        self.quick = quick
        self.run_id = uuid.uuid4().hex[:8]
        self.sessions = 0
        self.results = {peer.key: Results() for peer in peers}

    @contextlib.asynccontextmanager
    async def connect(self, peer: Peer) -> AsyncIterator[Session]:
        """Launch ``peer`` with a private HOME (and state directory) in a temporary directory."""
        self.sessions += 1
        tag = f"{self.run_id}:{self.sessions}"
        with tempfile.TemporaryDirectory(prefix=f"bench-peers-{peer.key}-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            env = {"PATH": os.environ["PATH"], "HOME": str(home), HOME_ENV: str(home / "backgroundr"), SESSION_ENV: tag}
            params = StdioServerParameters(
                command=peer.command[0], args=peer.command[1:], env={**env, **peer.env}, cwd=tmp
            )
            with (Path(tmp) / "server.stderr").open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT) as client:
                    yield Session(client, tag)

    def sweep(self, peer: Peer, scenario: str) -> None:
        """Kill every process this run left (the client of ``peer`` is closed or idle) and record it."""
        left = of_run(self.run_id)
        if left:
            self.results[peer.key].killed.setdefault(scenario, []).extend(kill_all(left))

    def sweep_marker(self, peer: Peer, scenario: str, marker: str) -> None:
        left = marked(marker)
        if left:
            self.results[peer.key].killed.setdefault(scenario, []).extend(kill_all(left))

    # -- launch to tools/list ------------------------------------------------------------------

    async def startup(self) -> None:
        launches = 2 if self.quick else 5
        for launch in range(launches):
            order = self.peers[launch % len(self.peers) :] + self.peers[: launch % len(self.peers)]
            for peer in order:
                r = self.results[peer.key]
                started = time.perf_counter()
                try:
                    async with self.connect(peer) as s:
                        tools = await s.client.list_tools(cache_mode="bypass")
                        r.startup.append(time.perf_counter() - started)
                        r.tool_count = len(tools.tools)
                        r.tools_bytes = len(tools.model_dump_json(by_alias=True).encode())
                except Exception as error:
                    r.errors["startup"] = f"{type(error).__name__}: {error}"[:300]
                self.sweep(peer, "startup")

    # -- one connection: start, write, status, many, tree, ignorer -----------------------------

    async def start_latency(self, peer: Peer, s: Session, r: Results) -> None:
        marker, refs = new_marker(), []
        for _ in range(4 if self.quick else 10):
            await anyio.sleep(GAP)
            ref, answer = await peer.start(s, marked_command(marker, SLEEP))
            refs.append(ref)
            r.start.append(answer.seconds)
        for ref in refs:
            await peer.end(s, ref)
        await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, "start latency", marker)

    async def wait_finished(self, peer: Peer, s: Session, ref: str, marker: str, limit: float = RUN_TIMEOUT) -> bool:
        """Wait on a pidfd of the task's top process, then poll the server's state call, for at
        most ``limit`` seconds: whether the server reported the task finished."""
        with anyio.move_on_after(limit):
            processes = marked(marker)
            pids = {p.pid for p in processes}
            for top in [p for p in processes if p.ppid() not in pids]:
                await wait_pidfd(top.pid, limit)
            while not await peer.finished(s, ref):
                await anyio.sleep(POLL)
            return True
        return False

    async def plain_shell(self, command: str, directory: Path) -> float:
        out = directory / "plain-shell.out"
        started = time.perf_counter()
        with anyio.fail_after(RUN_TIMEOUT):
            async with await anyio.open_process(["sh", "-c", f"{{ {command}; }} > {shlex.quote(str(out))}"]) as process:
                code = await process.wait()
        elapsed = time.perf_counter() - started
        size = out.stat().st_size
        out.unlink()
        if code != 0 or size != BIG:
            raise RuntimeError(f"plain shell run exited {code} and wrote {size} bytes")
        return elapsed

    async def write_and_status(self, peer: Peer, s: Session, r: Results) -> None:
        server = s.server_process()
        # The small log, and a warm-up of the state and tail calls.
        small_marker = new_marker()
        small, _ = await peer.start(s, marked_command(small_marker, SMALL_WRITER))
        if not await self.wait_finished(peer, s, small, small_marker):
            raise RuntimeError(f"a {SMALL}-byte writer did not finish in {RUN_TIMEOUT:g} s")
        await peer.tail(s, small)
        big, limit = "", WRITE_LIMIT / 2 if self.quick else WRITE_LIMIT
        with tempfile.TemporaryDirectory(prefix="bench-peers-shell-") as tmp:
            for _ in range(1 if self.quick else 3):
                marker = new_marker()
                command = marked_command(marker, WRITER)
                r.write_shell.append(await self.plain_shell(command, Path(tmp)))
                await anyio.sleep(GAP)
                with Sampler(server) as idle:
                    await anyio.sleep(0.3)
                with Sampler(server) as busy:
                    started = time.perf_counter()
                    big, _ = await peer.start(s, command)
                    finished = await self.wait_finished(peer, s, big, marker, limit)
                    elapsed = time.perf_counter() - started
                    written = bytes_written(marker, "head")
                r.rss_idle.append(max(idle.samples))
                r.rss_peak.append(max(busy.samples))
                if not finished:
                    r.write_unfinished = (
                        f"not finished after {limit:g} s: the writer had written "
                        f"{'?' if written is None else human_bytes(written)} of {human_bytes(BIG)}; ended"
                    )
                    await peer.end(s, big)
                    await wait_count(marker, lambda n: n == 0, END_SETTLE)
                    self.sweep_marker(peer, "200 MB write", marker)
                    break
                r.write.append(elapsed)
                self.sweep_marker(peer, "200 MB write", marker)
        await anyio.sleep(GAP)
        r.default_read_bytes = (await peer.read_default(s, big)).text_bytes
        for ref in (small, big):
            await anyio.sleep(GAP)
            await peer.tail(s, ref)  # warm-up
        for _ in range(4 if self.quick else 10):
            for label, ref in (("small", small), ("big", big)):
                await anyio.sleep(GAP)
                answer = await peer.tail(s, ref)
                r.status[label].append(answer.seconds)
                r.status_bytes[label] = answer.text_bytes

    async def many(self, peer: Peer, s: Session, r: Results) -> None:
        marker, refs = new_marker(), []
        for _ in range(3 if self.quick else 5):  # the call's cost without the 100 (its transport's floor)
            await anyio.sleep(GAP)
            r.few_list.append((await peer.running(s))[1].seconds)
        await anyio.sleep(GAP)
        started = time.perf_counter()
        for _ in range(TASKS):
            refs.append((await peer.start(s, marked_command(marker, SLEEP)))[0])
        r.many_start = time.perf_counter() - started
        await wait_count(marker, lambda n: n >= TASKS, APPEAR_TIMEOUT)
        for _ in range(3 if self.quick else 5):
            await anyio.sleep(GAP)
            r.many_listed, answer = await peer.running(s)
            r.many_list.append(answer.seconds)
            r.many_list_bytes = answer.text_bytes
        for ref in refs:
            await peer.end(s, ref)
        await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, "100 tasks", marker)

    async def end_one(self, peer: Peer, s: Session, script: str, scenario: str) -> tuple[float, int, int]:
        """Start ``script``, wait for its sleeps, end it: (end call s, processes, survivors)."""
        marker = new_marker()
        sleeps = script.count("sleep")
        ref, _ = await peer.start(s, marked_command(marker, script))
        with anyio.fail_after(APPEAR_TIMEOUT):
            while sum(p.name() == "sleep" for p in marked(marker)) < sleeps:
                await anyio.sleep(0.02)
        await anyio.sleep(0.2)  # let the shell set its traps
        before = len(marked(marker))
        answer = await peer.end(s, ref)
        survivors = await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, scenario, marker)
        return answer.seconds, before, survivors

    async def one_connection(self, peer: Peer) -> None:
        r = self.results[peer.key]
        steps: list[tuple[str, Callable[[Session], Any]]] = [
            ("start latency", lambda s: self.start_latency(peer, s, r)),
            ("200 MB write + status", lambda s: self.write_and_status(peer, s, r)),
            ("100 tasks", lambda s: self.many(peer, s, r)),
            ("tree", lambda s: self.ends(peer, s, TREE, "tree", r.tree_end, r.tree)),
            ("ignorer", lambda s: self.ends(peer, s, IGNORER, "ignores SIGTERM", r.ignorer_end, r.ignorer)),
        ]
        try:
            async with self.connect(peer) as s:
                for name, step in steps:
                    print(f"  {peer.label}: {name} ...", file=sys.stderr, flush=True)
                    try:
                        with anyio.fail_after(SCENARIO_TIMEOUT):
                            await step(s)
                    except Exception as error:  # a peer's failure is a result, not the end of the run
                        r.errors[name] = f"{type(error).__name__}: {error}"[:300]
                        print(f"    failed: {r.errors[name]}", file=sys.stderr, flush=True)
        except Exception as error:
            r.errors["connection"] = f"{type(error).__name__}: {error}"[:300]
        self.sweep(peer, "one connection")

    async def ends(
        self, peer: Peer, s: Session, script: str, scenario: str, ends: list[float], counts: list[tuple[int, int]]
    ) -> None:
        for _ in range(1 if self.quick else 2):
            seconds, before, survivors = await self.end_one(peer, s, script, scenario)
            ends.append(seconds)
            counts.append((before, survivors))

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, peer: Peer) -> None:
        r = self.results[peer.key]
        for _ in range(1 if self.quick else 2):
            marker = new_marker()
            try:
                with anyio.fail_after(SCENARIO_TIMEOUT):
                    async with self.connect(peer) as s:
                        await peer.start(s, marked_command(marker, SLEEP))
                        await wait_count(marker, lambda n: n >= 1, APPEAR_TIMEOUT)
                        before = len(marked(marker))
                        closing = time.perf_counter()
                    r.disconnect_close.append(time.perf_counter() - closing)
                    orphans = await wait_count(marker, lambda n: n == 0, ORPHAN_SETTLE)
                    r.orphans.append((before, orphans))
            except Exception as error:
                r.errors["disconnect"] = f"{type(error).__name__}: {error}"[:300]
            self.sweep_marker(peer, "disconnect", marker)
            self.sweep(peer, "disconnect")

    async def run(self) -> None:
        print("launch to tools/list ...", file=sys.stderr, flush=True)
        with anyio.fail_after(SCENARIO_TIMEOUT):
            await self.startup()
        for peer in self.peers:
            await self.one_connection(peer)
            print(f"  {peer.label}: disconnect ...", file=sys.stderr, flush=True)
            await self.disconnect(peer)


@contextlib.contextmanager
def final_sweep(run_id: Callable[[], str | None]) -> Iterator[list[str]]:
    """On the way out, however it goes, kill whatever still carries this run's marker."""
    killed: list[str] = []
    try:
        yield killed
    finally:
        current = run_id()
        if current is not None:
            killed.extend(kill_all(of_run(current)))
            if killed:
                print("killed processes left by the run: " + "; ".join(killed), file=sys.stderr)


PEERS: dict[str, type[Peer]] = {cls.key: cls for cls in (Ours, DesktopCommander, BackgroundJob, Backburner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    parser.add_argument("--only", nargs="+", choices=list(PEERS)[1:], default=list(PEERS)[1:], metavar="PEER")
    args = parser.parse_args()

    peers = [PEERS[key]() for key in ["ours", *args.only]]
    print(f"peers in {peers_dir()} (set {PEERS_DIR_ENV} to move them)", file=sys.stderr)
    for peer in peers:
        try:
            peer.prepare()
        except (RuntimeError, OSError, subprocess.SubprocessError) as failure:
            peer.skipped = str(failure)[:300]
            print(f"skipping {peer.label}: {peer.skipped}", file=sys.stderr)
    runnable = [peer for peer in peers if not peer.skipped]
    bench = Bench(runnable, args.quick)

    with final_sweep(lambda: bench.run_id) as killed:
        anyio.run(bench.run)
    results = {**bench.results, **{p.key: Results() for p in peers if p.skipped}}

    print(f"{machine()}{' (--quick)' if args.quick else ''}\n")
    print_table(peers, results)
    print()
    for peer in peers:
        if peer.skipped:
            print(f"- {peer.label}: not run: {peer.skipped}")
        for scenario, message in results[peer.key].errors.items():
            print(f"- {peer.label}, {scenario}: {message}")
    if killed:
        print(f"- processes the final sweep killed: {'; '.join(killed)}")

    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("peers-%Y%m%d-%H%M%S.json")
    record = {
        "machine": machine(),
        "quick": args.quick,
        "servers": {
            p.key: {
                "label": p.label,
                "version": p.version,
                "command": p.command,
                "skipped": p.skipped,
                "mapping": p.mapping,
                "pip_freeze": p.resolved,
            }
            for p in peers
        },
        "results": {key: dataclasses.asdict(r) for key, r in results.items()},
        "table": [{"scenario": s, "figure": f, "cells": c} for s, f, c in rows(peers, results)],
        "final_sweep_killed": killed,
    }
    out.write_text(json.dumps(record, indent=2))
    chart = out.with_suffix(".svg")
    chart.write_text(render_chart(record) + "\n")
    print(f"\n(also written to {out}, and the chart to {chart})", file=sys.stderr)


if __name__ == "__main__":
    main()
