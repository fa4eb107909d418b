"""``python -m loadtest run | compare``: the command line of the load-test kit."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.config import AckMode, RunConfig, Scenario, Target
from loadtest.thresholds import Threshold, ThresholdError, compare_table

EXIT_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        return _compare(args.reports)
    try:
        thresholds = [t for text in args.fail_on for t in Threshold.parse(text)]
    except ThresholdError as exc:
        parser.error(str(exc))
    return _run(args, thresholds, list(argv) if argv is not None else sys.argv[1:])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load-test any y-websocket server (room in the URL path), or compare reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one scenario and write a JSON report")
    run.add_argument(
        "--url",
        action="append",
        required=True,
        metavar="URL",
        help="server base URL, e.g. ws://127.0.0.1:8000/ws (the room is appended); "
        "repeat to spread each wedding's clients over several servers",
    )
    run.add_argument("--scenario", type=Scenario, choices=list(Scenario), default=Scenario.STEADY)
    run.add_argument("--weddings", type=int, default=10, help="documents (big-wedding: 1)")
    run.add_argument("--clients", type=int, default=4, help="clients per wedding")
    run.add_argument("--rate", type=float, default=1.0, help="edits/s per client")
    run.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    run.add_argument("--report", type=Path, default=Path("loadtest-report.json"))
    run.add_argument("--server-pid", type=int, help="sample this process tree's CPU and RSS")
    run.add_argument(
        "--target",
        type=Target,
        choices=list(Target),
        default=Target.CORE,
        help='set core["notes"] or append timeline entries (both valid under proto/schema.md)',
    )
    run.add_argument(
        "--acks",
        type=AckMode,
        choices=list(AckMode),
        default=AckMode.AUTO,
        help="send the gateway's HELLO to measure durable acks (auto: if answered)",
    )
    run.add_argument(
        "--deflate",
        action="store_true",
        help="offer permessage-deflate (the server decides; wire bytes are counted compressed)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="connect with RESUME instead of sync step 1 (gateway only: a stock server "
        "ignores RESUME and never syncs)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="generator processes (default: the cores this process may use)",
    )
    run.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit 1 when it holds, e.g. 'p99>50' or 'lost>0,converged==false'",
    )
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument(
        "--settle-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the last deliveries and acks",
    )
    run.add_argument("--spike-factor", type=float, default=10.0, help="spike: rate multiplier")
    run.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        help="reconnect-storm: reconnect delays are uniform in [0, JITTER] s",
    )
    run.add_argument(
        "--missed", type=int, default=200, help="offline-resume: edits the resuming client misses"
    )
    run.add_argument(
        "--connect-concurrency",
        type=int,
        default=50,
        help="connections opened at once per worker (join-storm: all)",
    )
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--quiet", action="store_true", help="no live progress")
    compare = commands.add_parser("compare", help="print a Markdown table of reports")
    compare.add_argument("reports", nargs="+", type=Path)
    return parser


def _default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _config(args: argparse.Namespace) -> RunConfig:
    weddings = 1 if args.scenario is Scenario.BIG_WEDDING else args.weddings
    if weddings < 1 or args.clients < 1 or args.duration <= 0 or args.rate < 0:
        raise ValueError("--weddings, --clients and --duration must be positive, --rate >= 0")
    if args.resume and args.acks is AckMode.OFF:
        raise ValueError("--resume is announced in the HELLO: it needs --acks auto or on")
    if args.scenario is Scenario.OFFLINE_RESUME and args.clients < 2:
        raise ValueError("offline-resume needs --clients >= 2 (one resumes, the others write)")
    total = weddings * args.clients
    return RunConfig(
        urls=tuple(args.url),
        scenario=args.scenario,
        weddings=weddings,
        clients=args.clients,
        rate=args.rate,
        duration=args.duration,
        target=args.target,
        acks=args.acks,
        deflate=args.deflate,
        resume=args.resume,
        workers=max(1, min(args.workers, total)),
        run_id=secrets.token_hex(4),
        connect_concurrency=args.connect_concurrency,
        settle_timeout=args.settle_timeout,
        spike_factor=args.spike_factor,
        jitter=args.jitter,
        missed=args.missed,
        seed=args.seed,
    )


def _run(args: argparse.Namespace, thresholds: list[Threshold], argv: list[str]) -> int:
    from loadtest.driver import Driver, RunFailed
    from loadtest.report import build_report

    try:
        config = _config(args)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        driver = Driver(config, server_pid=args.server_pid, quiet=args.quiet)
    except LookupError as exc:
        print(f"loadtest: --server-pid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = driver.run()
    except RunFailed as exc:
        print(f"loadtest: the run failed: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    report = build_report(
        result, command=["python", "-m", "loadtest", *argv], server_pid=args.server_pid
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.no_plots:
        from loadtest.plots import write_plots

        write_plots(report, args.report.with_suffix(""))
    _print_summary(report, args.report)
    return _check(report, thresholds)


def _print_summary(report: dict[str, Any], path: Path) -> None:
    latency = report["latency_ms"] or {}
    acks = report["ack_latency_ms"] or {}
    server = report["server"]
    lines = [
        f"scenario {report['scenario']}: sent {report['sent']:,}, delivered {report['delivered']:,}"
        f" ({report['updates_per_s']:,}/s), lost {report['lost']:,}, "
        f"converged {report['converged']}",
        "latency ms: " + _fmt(latency) + (f" | durable ack ms: {_fmt(acks)}" if acks else ""),
        f"server CPU {server['cpu_percent']}% RSS {server['rss_mb']} MB | "
        f"generator CPU {report['generator_cpu_percent']}%",
        f"report: {path}",
    ]
    print("\n".join(lines), file=sys.stderr)
    for warning in report["warnings"]:
        print(f"\n*** WARNING: {warning} ***", file=sys.stderr)


def _fmt(summary: dict[str, Any]) -> str:
    keys = ("p50", "p95", "p99", "p999", "max")
    return " ".join(f"{k} {summary[k]}" for k in keys if k in summary) or "—"


def _check(report: dict[str, Any], thresholds: list[Threshold]) -> int:
    failed = False
    for threshold in thresholds:
        try:
            violated, measured = threshold.violated(report)
        except ThresholdError as exc:
            print(f"loadtest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if violated:
            failed = True
            print(
                f"FAIL: {threshold.metric} = {measured} ({threshold.metric}"
                f"{threshold.op}{threshold.value:g})",
                file=sys.stderr,
            )
    return EXIT_THRESHOLD if failed else 0


def _compare(paths: list[Path]) -> int:
    reports = []
    for path in paths:
        try:
            reports.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            print(f"loadtest: cannot read {path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(compare_table(reports))
    return 0
