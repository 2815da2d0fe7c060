"""Draw the side-by-side results of bench/peers.py as one SVG (standard library only).

    python bench/chart.py bench/results/peers-<time>.json docs/peers.svg

Left panel: each timing as a multiple of ours (log scale; lower is better, 1x is ours).
Right panel: processes left alive after ending a task or closing the client (lower is better).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

COLOURS = ("#1b6ca8", "#e07b39", "#6a9f3c", "#a44a9c", "#777777")
ROW_HEIGHT = 14
GROUP_GAP = 16
LABEL_WIDTH = 210
PANEL_WIDTH = 330
LOG_RANGE = (0.1, 1000.0)

Timing = Callable[[dict[str, Any]], float | None]
Bar = float | str | None
"""A value to draw, a note to print instead (e.g. it did not finish), or nothing to show."""


def _median(values: Sequence[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _status(kind: str) -> Timing:
    return lambda r: _median(r.get("status", {}).get(kind))


TIMINGS: list[tuple[str, Timing]] = [
    ("launch to first tools/list", lambda r: _median(r.get("startup"))),
    ("start a task", lambda r: _median(r.get("start"))),
    ("status, 20 kB log", _status("small")),
    ("status, 200 MB log", _status("big")),
    ("200 MB write to finished", lambda r: _median(r.get("write"))),
    ("start 100 tasks", lambda r: r.get("many_start")),
]
LEFTOVERS: list[tuple[str, str]] = [
    ("tree `sleep & sleep` ended", "tree"),
    ("task ignoring SIGTERM ended", "ignorer"),
    ("client disconnected", "orphans"),
]


def _left_alive(runs: list[list[int]] | None) -> float | None:
    """The most processes any run left alive ([processes, left alive] per run)."""
    return float(max(left for _, left in runs)) if runs else None


def _bars(
    groups: list[tuple[str, list[Bar]]], x: float, y: float, scale: Callable[[float], float]
) -> tuple[list[str], float]:
    parts = []
    for label, values in groups:
        parts.append(f'<text x="{x - 6}" y="{y + ROW_HEIGHT}" text-anchor="end">{escape(label)}</text>')
        for index, value in enumerate(values):
            top = y + index * ROW_HEIGHT
            if value is None or isinstance(value, str):
                note = "n/a" if value is None else value
                parts.append(f'<text x="{x + 4}" y="{top + 11}" fill="#999">{escape(note)}</text>')
                continue
            width = max(1.0, scale(value))
            parts.append(
                f'<rect x="{x}" y="{top + 2}" width="{width:.1f}" height="{ROW_HEIGHT - 4}" '
                f'fill="{COLOURS[index % len(COLOURS)]}"/>'
            )
            parts.append(f'<text x="{x + width + 4:.1f}" y="{top + 11}">{value:.3g}</text>')
        y += len(values) * ROW_HEIGHT + GROUP_GAP
    return parts, y


def render(data: dict[str, Any]) -> str:
    """The SVG for one results file of bench/peers.py."""
    servers = [name for name, info in data["servers"].items() if not info.get("skipped")]
    labels = [data["servers"][name]["label"] for name in servers]
    results = data["results"]
    ours = results[servers[0]]

    ratio_groups: list[tuple[str, list[Bar]]] = []
    for title, timing in TIMINGS:
        base = timing(ours)
        ratios: list[Bar] = []
        for name in servers:
            value = timing(results[name])
            if "write" in title and results[name].get("write_unfinished"):
                ratios.append("did not finish")
            else:
                ratios.append(None if base is None or value is None else value / base)
        ratio_groups.append((title, ratios))
    leftover_groups: list[tuple[str, list[Bar]]] = [
        (title, [_left_alive(results[name].get(key)) for name in servers]) for title, key in LEFTOVERS
    ]

    low, high = (math.log10(bound) for bound in LOG_RANGE)

    def log_scale(value: float) -> float:
        clamped = min(max(value, LOG_RANGE[0]), LOG_RANGE[1])
        return (math.log10(clamped) - low) / (high - low) * (PANEL_WIDTH - 60)

    most_left = max((v for _, values in leftover_groups for v in values if isinstance(v, float)), default=1.0) or 1.0

    def count_scale(value: float) -> float:
        return value / most_left * (PANEL_WIDTH - 60)

    top = 60
    left_x, right_x = LABEL_WIDTH, 2 * LABEL_WIDTH + PANEL_WIDTH
    left, left_end = _bars(ratio_groups, left_x, top, log_scale)
    right, right_end = _bars(leftover_groups, right_x, top, count_scale)
    one_x = left_x + log_scale(1.0)
    height = max(left_end, right_end) + 10
    width = right_x + PANEL_WIDTH
    legend = [
        f'<rect x="{left_x + i * 170}" y="28" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>'
        f'<text x="{left_x + i * 170 + 14}" y="37">{escape(label)}</text>'
        for i, label in enumerate(labels)
    ]
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="10">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{left_x}" y="16" font-size="12">Time as a multiple of mcp-backgroundr '
            "(log scale, lower is better)</text>",
            f'<text x="{right_x}" y="16" font-size="12">Processes left alive (lower is better)</text>',
            *legend,
            f'<line x1="{one_x:.1f}" y1="{top}" x2="{one_x:.1f}" y2="{left_end}" stroke="#bbb" '
            'stroke-dasharray="3,3"/>',
            *left,
            *right,
            "</svg>",
        ]
    )


def main(arguments: list[str]) -> None:
    if len(arguments) != 2:
        raise SystemExit("usage: python bench/chart.py RESULTS.json OUTPUT.svg")
    source, target = (Path(argument) for argument in arguments)
    target.write_text(render(json.loads(source.read_text())) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
