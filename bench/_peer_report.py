"""The table of bench/peers.py: each figure as a ratio to mcp-backgroundr or to a plain shell."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from _harness import median
from _peer_servers import CLIENT_GRACE, END_SETTLE, ORPHAN_SETTLE, Peer


@dataclass
class Results:
    """Everything measured for one server; lists hold one value per repetition."""

    startup: list[float] = field(default_factory=list)
    tools_bytes: int = 0
    tool_count: int = 0
    start: list[float] = field(default_factory=list)
    status: dict[str, list[float]] = field(default_factory=lambda: {"small": [], "big": []})
    status_bytes: dict[str, int] = field(default_factory=dict)
    default_read_bytes: int = 0
    write: list[float] = field(default_factory=list)
    write_shell: list[float] = field(default_factory=list)
    rss_idle: list[int] = field(default_factory=list)
    rss_peak: list[int] = field(default_factory=list)
    write_unfinished: str = ""
    """Why there is no time to completion: the writer was ended at the limit."""
    many_start: float = 0.0
    many_listed: int = 0
    many_list: list[float] = field(default_factory=list)
    many_list_bytes: int = 0
    few_list: list[float] = field(default_factory=list)
    """The same list call just before the 100 start (what earlier scenarios left: a few ended tasks)."""
    tree_end: list[float] = field(default_factory=list)
    tree: list[tuple[int, int]] = field(default_factory=list)
    """(processes before the end call, survivors after END_SETTLE)."""
    ignorer_end: list[float] = field(default_factory=list)
    ignorer: list[tuple[int, int]] = field(default_factory=list)
    disconnect_close: list[float] = field(default_factory=list)
    orphans: list[tuple[int, int]] = field(default_factory=list)
    killed: dict[str, list[str]] = field(default_factory=dict)
    """Processes the harness had to kill after a scenario, by scenario."""
    errors: dict[str, str] = field(default_factory=dict)
    """Scenarios that failed, with the error."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def human_bytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e4 else f"{size:.0f} B"


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 100 else f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def _counts(runs: list[tuple[int, int]]) -> str:
    if not runs:
        return "n/a"
    return (
        f"{median([float(s) for _, s in runs]):g} of {median([float(b) for b, _ in runs]):g} ("
        + ", ".join(f"{s}/{b}" for b, s in runs)
        + ")"
    )


_NO_DATA = (ValueError, ZeroDivisionError, KeyError, IndexError, TypeError, statistics.StatisticsError)


def rows(peers: list[Peer], results: dict[str, Results]) -> list[tuple[str, str, list[str]]]:
    """(scenario, figure, one cell per server). The first server is ours: the reference."""
    ours = results[peers[0].key]

    def versus(get: Callable[[Results], float], show: Callable[[float], str], failed: str = "") -> list[str]:
        cells = []
        for peer in peers:
            r = results[peer.key]
            if peer.skipped:
                cells.append("n/a")
                continue
            if failed in r.errors:
                cells.append(f"n/a ({r.errors[failed]})"[:120])
                continue
            try:
                value, base = get(r), get(ours)
            except _NO_DATA:
                cells.append("n/a (no data)")
                continue
            cells.append(show(value) if peer is peers[0] else f"{_ratio(value / base)} ({show(value)})")
        return cells

    def cell_each(show: Callable[[Results], str], failed: str = "") -> list[str]:
        cells = []
        for peer in peers:
            r = results[peer.key]
            if peer.skipped:
                cells.append("n/a")
            elif failed in r.errors:
                cells.append(f"n/a ({r.errors[failed]})"[:120])
            else:
                try:
                    cells.append(show(r))
                except _NO_DATA:
                    cells.append("n/a (no data)")
        return cells

    def shell_ratio(r: Results) -> str:
        if r.write_unfinished:
            return f"**{r.write_unfinished}** (shell {median(r.write_shell):.2f} s)"
        ratios = [w / sh for w, sh in zip(r.write, r.write_shell, strict=False)]
        return f"{_ratio(median(ratios))} ({median(r.write):.2f} s; shell {median(r.write_shell):.2f} s)"

    def rss(r: Results) -> str:
        peak, base = max(r.rss_peak), max(ours.rss_peak)
        growth = max(p - i for p, i in zip(r.rss_peak, r.rss_idle, strict=False))
        ratio = "" if r is ours else f"{_ratio(peak / base)} "
        return f"{ratio}({human_bytes(peak)}, +{human_bytes(growth)} over idle)"

    def tools(r: Results) -> str:
        ratio = "" if r is ours else f"{_ratio(r.tools_bytes / ours.tools_bytes)} "
        return f"{ratio}({human_bytes(r.tools_bytes)}, {r.tool_count} tools)"

    def closing(r: Results) -> str:
        took = median(r.disconnect_close)
        how = "the SDK killed its process group" if took >= CLIENT_GRACE else "the server exited by itself"
        return f"{took:.2f} s ({how})"

    def killed(r: Results) -> str:
        where = f" ({', '.join(r.killed)})" if r.killed else ""
        return f"{sum(len(v) for v in r.killed.values())}{where}"

    def big_over_small(r: Results) -> str:
        big, small = median(r.status["big"]), median(r.status["small"])
        ratio = "" if r is ours else f"{_ratio(big / median(ours.status['big']))} ours; "
        partial = " (on the output it kept of the writer it could not finish)" if r.write_unfinished else ""
        return f"{ratio}{_ratio(big / small)} its small-log call ({_ms(big)} vs {_ms(small)}){partial}"

    write, many = "200 MB write + status", "100 tasks"
    tree, ignorer = "end `sh -c 'sleep 300 & sleep 300'`", "end a task ignoring SIGTERM/SIGINT"
    gone = "client disconnects, 1 task running"
    table = [
        ("startup", f"launch -> first tools/list answer, median of {len(ours.startup)}"),
        ("startup", "tools/list answer size (tool count)"),
        ("start a task", f"start call, median of {len(ours.start)}"),
        ("status, 20 kB log", "tail-100 call, median"),
        ("status, 200 MB log", "tail-100 call, median"),
        ("status, 200 MB log", "tail-100 answer text"),
        ("status, 200 MB log", "default output read, answer text"),
        ("200 MB write", f"start -> reported finished vs plain shell, median of {len(ours.write)}"),
        ("200 MB write", "server peak RSS during the write"),
        (many, "starting 100, one call after another"),
        (many, "list call, median"),
        (many, "list call before the 100 start (a few ended tasks), median"),
        (many, "running tasks the list shows (answer text)"),
        (tree, f"survivors {END_SETTLE:g} s after the end call, of processes (each run)"),
        (tree, "end call, median"),
        (ignorer, f"survivors {END_SETTLE:g} s after the end call, of processes (each run)"),
        (ignorer, "end call, median"),
        (gone, f"orphans {ORPHAN_SETTLE:g} s after the client closed, of processes (each run)"),
        (gone, "client close took, median"),
        ("harness", "leftover processes it had to kill"),
    ]
    cells = [
        versus(lambda r: median(r.startup), _ms, "startup"),
        cell_each(tools, "startup"),
        versus(lambda r: median(r.start), _ms, "start latency"),
        versus(lambda r: median(r.status["small"]), _ms, write),
        cell_each(big_over_small, write),
        versus(lambda r: r.status_bytes["big"], human_bytes, write),
        versus(lambda r: r.default_read_bytes, human_bytes, write),
        cell_each(shell_ratio, write),
        cell_each(rss, write),
        versus(lambda r: r.many_start, lambda v: f"{v:.2f} s", many),
        versus(lambda r: median(r.many_list), _ms, many),
        versus(lambda r: median(r.few_list), _ms, many),
        cell_each(lambda r: f"{r.many_listed} ({human_bytes(r.many_list_bytes)})", many),
        cell_each(lambda r: _counts(r.tree), "tree"),
        versus(lambda r: median(r.tree_end), _ms, "tree"),
        cell_each(lambda r: _counts(r.ignorer), "ignorer"),
        versus(lambda r: median(r.ignorer_end), _ms, "ignorer"),
        cell_each(lambda r: _counts(r.orphans), "disconnect"),
        cell_each(closing, "disconnect"),
        cell_each(killed),
    ]
    return [(scenario, figure, row) for (scenario, figure), row in zip(table, cells, strict=True)]


def print_table(peers: list[Peer], results: dict[str, Results]) -> None:
    print("| scenario | figure | " + " | ".join(f"{p.label} {p.version}".strip() for p in peers) + " |")
    print("| --- | --- |" + " --- |" * len(peers))
    for scenario, figure, cells in rows(peers, results):
        print(f"| {scenario} | {figure} | " + " | ".join(cells) + " |")


def machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )
