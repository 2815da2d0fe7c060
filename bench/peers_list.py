"""list_tasks with 100 running tasks beside desktop-commander's list, many calls, alternating.

    python bench/peers_list.py [--calls N] [--gap SECONDS]

``peers.py`` gives this figure as a median of three or five calls per server, made minutes apart,
and single calls of both servers swing 2-10x on this machine, so three runs of it disagreed on
which server was faster (docs/benchmarks.md 13). Here both servers run at once, each with the
same 100 `sleep` tasks, and their list calls alternate (which server goes first alternates too),
``GAP`` apart as in ``peers.py``: whatever the machine does meanwhile falls on both alike. First
the list with no task (the per-call floor), then with the 100. Printed per server: the median and
quartiles of the calls, and in how many of the alternating pairs ours was the faster.

desktop-commander is installed as ``peers.py`` installs it (its scratch directory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import anyio
from _peer_servers import (
    APPEAR_TIMEOUT,
    END_SETTLE,
    GAP,
    SLEEP,
    TASKS,
    DesktopCommander,
    Ours,
    Peer,
    Session,
    marked_command,
    new_marker,
    wait_count,
)
from peers import Bench, final_sweep


def _quartiles(values: Sequence[float]) -> str:
    low, middle, high = statistics.quantiles(values, n=4)
    return f"{middle * 1e3:.2f} ms (quartiles {low * 1e3:.2f}-{high * 1e3:.2f})"


async def _pairs(servers: list[tuple[Peer, Session]], calls: int, gap: float) -> dict[str, list[float]]:
    """``calls`` list calls of each server, alternating, the first server of a pair alternating too."""
    seconds: dict[str, list[float]] = {peer.key: [] for peer, _ in servers}
    for round_ in range(calls):
        for peer, session in servers if round_ % 2 == 0 else servers[::-1]:
            await anyio.sleep(gap)
            seconds[peer.key].append((await peer.running(session))[1].seconds)
    return seconds


def _report(title: str, seconds: dict[str, list[float]], peers: list[Peer]) -> None:
    ours, theirs = (seconds[peer.key] for peer in peers)
    faster = sum(mine < other for mine, other in zip(ours, theirs, strict=True))
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"| {title} | {_quartiles(ours)} | {_quartiles(theirs)} | {ratio:.2f}x | {faster} of {len(ours)} |")


async def _run(bench: Bench, calls: int, gap: float) -> None:
    peers = bench.peers
    async with bench.connect(peers[0]) as first, bench.connect(peers[1]) as second:
        servers = [(peers[0], first), (peers[1], second)]
        for peer, session in servers:  # warm-up
            await peer.running(session)
        floor = await _pairs(servers, max(calls // 2, 4), gap)
        marker = new_marker()
        refs = {
            peer.key: [(await peer.start(s, marked_command(marker, SLEEP)))[0] for _ in range(TASKS)]
            for peer, s in servers
        }
        await wait_count(marker, lambda n: n >= 2 * TASKS, APPEAR_TIMEOUT)
        many = await _pairs(servers, calls, gap)
        for peer, session in servers:
            for ref in refs[peer.key]:
                await peer.end(session, ref)
        await wait_count(marker, lambda n: n == 0, END_SETTLE)
        bench.sweep_marker(peers[0], "100 tasks", marker)
    print(
        f"| list call, {calls} alternating pairs {gap} s apart | {peers[0].label} | {peers[1].label} "
        "| ours / theirs (medians) | pairs in which ours was faster |"
    )
    print("| --- | --- | --- | --- | --- |")
    _report("no task (the per-call floor)", floor, peers)
    _report(f"{TASKS} running tasks", many, peers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="list calls of each server with the 100 tasks")
    parser.add_argument("--gap", type=float, default=GAP, help="seconds before each call")
    args = parser.parse_args()
    peers: list[Peer] = [Ours(), DesktopCommander()]
    for peer in peers:
        peer.prepare()
    bench = Bench(peers, quick=False)
    with final_sweep(lambda: bench.run_id):
        anyio.run(_run, bench, args.calls, args.gap)
    print(f"\n{sys.platform}, {args.calls} calls", file=sys.stderr)


if __name__ == "__main__":
    main()
