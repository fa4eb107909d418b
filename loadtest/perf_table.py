"""``python -m loadtest.perf_table DIR``: the README table of ``perf_compression.sh``'s reports.

Reports are named ``<load>-<configuration>-<round>.json``; each row is one (load,
configuration), its numbers the median over the rounds (the spread, min-max, in brackets when
there are several).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadtest.thresholds import lookup

COLUMNS: list[tuple[str, str, str]] = [
    ("p50 ms", "latency_ms.p50", "{:.2f}"),
    ("p99 ms", "latency_ms.p99", "{:.2f}"),
    ("server CPU µs / delivery", "server.cpu_us_per_delivery", "{:.0f}"),
    ("server CPU %", "server.cpu_percent", "{:.1f}"),
    ("wire bytes / delivery", "wire.bytes_in_per_delivery", "{:.1f}"),
    ("messages / delivery", "wire.messages_in_per_delivery", "{:.2f}"),
    ("server KB / connection", "server.rss_kb_per_connection", "{:.0f}"),
]
ORDER = ("plain", "deflate", "batch", "both")


def table(directory: Path) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob("*-*-*.json")):
        load, config, _ = path.stem.rsplit("-", 2)
        groups[load, config].append(json.loads(path.read_text(encoding="utf-8")))
    header = "| load | configuration | runs | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [header, "|---|---|---:|" + "---:|" * len(COLUMNS)]
    rank = {name: i for i, name in enumerate(ORDER)}
    for load, config in sorted(groups, key=lambda k: (k[0], rank.get(k[1], 99), k[1])):
        reports = groups[load, config]
        cells = [_cell(reports, path, fmt) for _, path, fmt in COLUMNS]
        flags = "" if all(r["lost"] == 0 and r["converged"] for r in reports) else " **lost**"
        lines.append(f"| {load} | {config}{flags} | {len(reports)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(reports: list[dict[str, Any]], path: str, fmt: str) -> str:
    values = [v for r in reports if (v := lookup(r, path)) is not None]
    if not values:
        return "—"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}-{fmt.format(max(values))})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    print(table(parser.parse_args().directory))


if __name__ == "__main__":
    main()
