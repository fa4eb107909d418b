"""``python -m loadtest.faults``: run the fault suite (one tier, or one fault), report, exit.

Exit status 0 when every check of every fault passed, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from loadtest.faults.nemeses import NEMESES
from loadtest.faults.runner import run_fault
from loadtest.faults.tier import TIERS

COLUMNS = ("fault", "acked", "lost", "longest ack gap s", "RSS Δ MB", "converge s",
           "close codes", "notes")  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.faults",
        description="Inject faults into a gateway cluster the suite starts; check that no "
        "acknowledged edit is lost and every replica converges.",
    )
    parser.add_argument("--tier", choices=sorted(TIERS), default="ci")
    names = [n.name for n in NEMESES]
    parser.add_argument("--fault", action="append", choices=names, help="run only this fault")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/wedsync-faults"),
                        help="node logs and data go here, one directory per fault")  # fmt: skip
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here")
    return parser.parse_args(argv)


def rss_delta(result: dict[str, Any]) -> str:
    before, after = result["rss_mb_before"], result["rss_mb_after"]
    deltas = [f"{name} {after[name] - before[name]:+.1f}" for name in before
              if before.get(name) is not None and after.get(name) is not None]  # fmt: skip
    return ", ".join(deltas) or "-"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        codes = ", ".join(f"{code} x{n}" for code, n in r["close_codes"].items()) or "-"
        notes = "; ".join(r["notes"] + [f"**FAIL** {f}" for f in r["failures"]]) or "ok"
        converge = "-" if r["converge_s"] is None else f"{r['converge_s']:.2f}"
        row = [r["fault"], f"{r['acked']}/{r['edits']}", str(r["lost"]),
               f"{r['longest_ack_gap_s']:.2f}", rss_delta(r), converge, codes, notes]  # fmt: skip
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    tier = TIERS[args.tier]
    chosen = [n for n in NEMESES if args.fault is None or n.name in args.fault]
    results = []
    for nemesis in chosen:
        print(f"fault {nemesis.name}: {nemesis.doc}", file=sys.stderr, flush=True)
        result = await run_fault(nemesis, tier, args.work_dir)
        verdict = "ok" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])
        print(f"  {verdict}", file=sys.stderr, flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results = asyncio.run(run(args))
    table = markdown(results)
    print(table)
    if args.report is not None:
        args.report.write_text(json.dumps({"tier": args.tier, "faults": results}, indent=2))
    if args.markdown is not None:
        args.markdown.write_text(table)
    return 1 if any(r["failures"] for r in results) else 0
