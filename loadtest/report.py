"""The JSON report of a run: built from the workers' finals and the parent's samples."""

from __future__ import annotations

import os
import platform
from collections import Counter, defaultdict
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest import stats
from loadtest.config import Scenario
from loadtest.driver import RunResult
from loadtest.sampler import mean
from loadtest.tally import MAX_REFUSAL_SAMPLES, REFUSED

GENERATOR_CPU_LIMIT = 85.0  # % of one core, per worker
SEND_LAG_LIMIT_MS = 5.0  # p99 lateness of the open-model schedule


def build_report(
    result: RunResult, *, command: list[str], server_pid: int | None
) -> dict[str, Any]:
    """Everything measured, under the keys of issue #3 (and a few more)."""
    config = result.config
    histograms = _merged_histograms(result.finals)
    tallies = [f["tally"] for f in result.finals]
    clients = {gid: c for f in result.finals for gid, c in f["clients"].items()}
    total = _sum(tallies)
    expected = sum(c["expected"] for c in clients.values())
    covered = sum(min(c["covered"], c["expected"]) for c in clients.values())
    diverged = _diverged_weddings(config.weddings, config.clients, clients)
    acks = histograms["ack_latency"].get_total_count() > 0
    errors: dict[str, int] = dict(sum((Counter(t["errors"]) for t in tallies), Counter()))
    duration = config.duration
    report: dict[str, Any] = {
        "scenario": config.scenario.value,
        "target": config.target.value,
        "urls": list(config.urls),
        "weddings": config.weddings,
        "clients_per_wedding": config.clients,
        "clients": config.total_clients,
        "rate_per_client": config.rate,
        "duration_s": duration,
        "workers": config.workers,
        "sent": total["sent"],
        "delivered": total["delivered"],
        "expected_deliveries": expected,
        "lost": expected - covered,
        "superseded": total["superseded"],
        "duplicates": total["duplicates"],
        "skipped_offline": total["skipped_offline"],
        "converged": not diverged and all(c["live"] for c in clients.values()),
        "weddings_diverged": diverged,
        "clients_not_connected_at_end": sum(1 for c in clients.values() if not c["live"]),
        "latency_ms": stats.summary_ms(histograms["latency"]),
        "latency_from_send_ms": stats.summary_ms(histograms["wire_latency"]),
        "send_lag_ms": stats.summary_ms(histograms["send_lag"]),
        "acks": acks,
        "ack_latency_ms": stats.summary_ms(histograms["ack_latency"]) if acks else None,
        "unacked": total["unacked"] if acks else None,
        "updates_per_s": round(total["delivered"] / duration, 1) if duration else 0.0,
        "edits_per_s": round(total["sent"] / duration, 1) if duration else 0.0,
        "connect_ms": stats.summary_ms(histograms["connect"]),
        "initial_sync_ms": stats.summary_ms(histograms["initial_sync"]),
        "reconnect_ms": stats.summary_ms(histograms["reconnect"]),
        "connect_phase_s": round(result.connect_seconds, 3),
        "resume": _resume_summary(tallies) if config.scenario is Scenario.OFFLINE_RESUME else None,
        "bytes": {"in": total["bytes_in"], "out": total["bytes_out"]},
        "wire": _wire(config.deflate, tallies, total["delivered"]),
        "errors": errors,
        "refused": sum(n for key, n in errors.items() if key.startswith(REFUSED)),
        "refusals": [r for t in tallies for r in t["refusals"]][:MAX_REFUSAL_SAMPLES],
        "server": _server_summary(result, server_pid, total["delivered"]),
        "generator_cpu_percent": mean(result.progress.generator_cpu),
        "generator_cpu_percent_per_worker": [mean(w) for w in result.progress.worker_cpu],
        "timeseries": _timeseries(result),
        "latency_hdr": _encoded(histograms["latency"]),
        "machine": _machine(),
        "started_at": result.started_at,
        "command": command,
    }
    report["warnings"] = _warnings(report)
    return report


def _merged_histograms(finals: list[dict[str, Any]]) -> dict[str, HdrHistogram]:
    merged: dict[str, HdrHistogram] = defaultdict(stats.new_histogram)
    for final in finals:
        for name, encoded in final["tally"]["histograms"].items():
            stats.merge_into(merged[name], encoded)
    return merged


def _sum(tallies: list[dict[str, Any]]) -> dict[str, int]:
    keys = (
        "sent",
        "delivered",
        "duplicates",
        "superseded",
        "unacked",
        "skipped_offline",
        "bytes_in",
        "bytes_out",
    )
    return {key: sum(int(t[key]) for t in tallies) for key in keys}


def _diverged_weddings(weddings: int, per_wedding: int, clients: dict[int, Any]) -> list[int]:
    diverged = []
    for wedding in range(weddings):
        members = range(wedding * per_wedding, (wedding + 1) * per_wedding)
        if len({clients[m]["digest"] for m in members if m in clients}) > 1:
            diverged.append(wedding)
    return diverged


def _resume_summary(tallies: list[dict[str, Any]]) -> dict[str, Any] | None:
    resumes = [r for t in tallies for r in t["resumes"]]
    if not resumes:
        return None
    count = len(resumes)
    return {
        "clients": count,
        "missed_edits_mean": round(sum(r["missed_edits"] for r in resumes) / count, 1),
        "bytes_in_mean": round(sum(r["bytes_in"] for r in resumes) / count),
        "payload_bytes_mean": round(sum(r["payload_bytes"] for r in resumes) / count),
        "ms_mean": round(sum(r["ms"] for r in resumes) / count, 3),
        "ms_max": max(r["ms"] for r in resumes),
    }


def _wire(deflate: bool, tallies: list[dict[str, Any]], delivered: int) -> dict[str, Any]:
    """What crossed the wire from the start of the load to the end of settling (after the
    connections and initial syncs): TCP bytes, so after permessage-deflate if negotiated."""
    keys = ("bytes_in", "bytes_out", "messages_in")
    load = {k: sum(t[k] - t["load_start"].get(k, 0) for t in tallies) for k in keys}
    return {
        "deflate_offered": deflate,
        "deflate_connections": sum(t["deflate_connections"] for t in tallies),
        **load,
        "bytes_in_per_delivery": round(load["bytes_in"] / delivered, 1) if delivered else None,
        "messages_in_per_delivery": (
            round(load["messages_in"] / delivered, 3) if delivered else None
        ),
    }


def _server_summary(result: RunResult, pid: int | None, delivered: int) -> dict[str, Any]:
    progress = result.progress
    mb = 1024 * 1024
    rss_mb = round(max(progress.server_rss) / mb, 1) if progress.server_rss else None
    per_connection = None
    if result.server_rss_before is not None and result.server_rss_connected is not None:
        connections = result.config.total_clients - result.connect_failures
        if connections:
            delta = result.server_rss_connected - result.server_rss_before
            per_connection = round(delta / connections / 1024, 1)
    cpu = result.server_cpu_seconds
    return {
        "pid": pid,
        "cpu_seconds": round(cpu, 3) if cpu is not None else None,
        "cpu_us_per_delivery": round(cpu * 1e6 / delivered, 1) if cpu and delivered else None,
        "cpu_percent": mean(progress.server_cpu),
        "cpu_percent_max": max(progress.server_cpu) if progress.server_cpu else None,
        "rss_mb": rss_mb,
        "rss_mb_before_connect": _mb(result.server_rss_before),
        "rss_mb_after_connect": _mb(result.server_rss_connected),
        "rss_kb_per_connection": per_connection,
    }


def _mb(value: int | None) -> float | None:
    return round(value / (1024 * 1024), 1) if value is not None else None


def _timeseries(result: RunResult) -> list[dict[str, Any]]:
    rows = []
    for second in sorted(result.progress.ticks):
        tick = result.progress.ticks[second]
        histogram: HdrHistogram = tick["histogram"]
        summary = stats.summary_ms(histogram) or {}
        rows.append(
            {
                "second": second,
                "delivered": histogram.get_total_count(),
                "p50": summary.get("p50"),
                "p99": summary.get("p99"),
                "max": summary.get("max"),
            }
        )
    return rows


def _encoded(histogram: HdrHistogram) -> str | None:
    encoded = stats.encode(histogram)
    return encoded.decode("ascii") if encoded is not None else None


def _machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "generator_affinity": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def _warnings(report: dict[str, Any]) -> list[str]:
    """Say loudly when the numbers measure the generator rather than the server."""
    out = []
    for index, cpu in enumerate(report["generator_cpu_percent_per_worker"]):
        if cpu is not None and cpu > GENERATOR_CPU_LIMIT:
            out.append(
                f"GENERATOR BOTTLENECK: worker {index} used {cpu:.0f}% of a core; "
                "add --workers or cores, or lower the load"
            )
    cores = len(report["machine"]["generator_affinity"])
    total = report["generator_cpu_percent"]
    if total is not None and total > GENERATOR_CPU_LIMIT * cores:
        out.append(f"GENERATOR BOTTLENECK: the generator used {total:.0f}% of its {cores} core(s)")
    lag = report["send_lag_ms"]
    if lag is not None and lag["p99"] > SEND_LAG_LIMIT_MS:
        out.append(
            f"GENERATOR BOTTLENECK: edits left {lag['p99']:.1f} ms late at p99 "
            "(the open-model schedule slipped; latencies include that lateness)"
        )
    if report["errors"]:
        out.append(f"errors: {report['errors']}")
    if report["refusals"]:
        first = report["refusals"][0]
        out.append(
            f"REFUSED: the server undid {report['refused']} changes of the kit's edits, "
            f"e.g. {first['field']}: {first['reason']} (the kit must write proto/schema.md)"
        )
    return out
