"""PNG plots of a report: latency over time and the latency distribution (CDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest import stats


def write_plots(report: dict[str, Any], stem: Path) -> list[Path]:
    """Write ``<stem>-latency.png`` and ``<stem>-cdf.png``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{report['scenario']} · {report['clients']} clients · {report['urls'][0]}"
    written = []

    rows = [r for r in report["timeseries"] if r["p50"] is not None]
    figure, axes = plt.subplots(figsize=(8, 4))
    for key in ("p50", "p99", "max"):
        axes.plot([r["second"] for r in rows], [r[key] for r in rows], label=key, marker=".")
    axes.set_yscale("log")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("edit → delivered latency (ms)")
    axes.set_title(title, fontsize=9)
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    path = stem.with_name(stem.name + "-latency.png")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)

    figure, axes = plt.subplots(figsize=(8, 4))
    encoded = report.get("latency_hdr")
    if encoded:
        histogram = stats.new_histogram()
        stats.merge_into(histogram, encoded.encode("ascii"))
        points = stats.cdf_points(histogram)
        axes.plot([p[0] for p in points], [p[1] * 100 for p in points], drawstyle="steps-post")
    axes.set_xscale("log")
    axes.set_xlabel("edit → delivered latency (ms)")
    axes.set_ylabel("deliveries at or below (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    path = stem.with_name(stem.name + "-cdf.png")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)
    return written
