"""HDR histograms (microseconds) and how they travel between processes."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record_us(histogram: HdrHistogram, micros: int) -> None:
    """Record one value, clamped into the trackable range (a negative latency is a clock bug)."""
    histogram.record_value(min(max(micros, LOWEST_US), HIGHEST_US))


def encode(histogram: HdrHistogram) -> bytes | None:
    """Compressed form for a pipe; None when empty (hdrh cannot encode an empty histogram)."""
    if histogram.get_total_count() == 0:
        return None
    data: bytes = histogram.encode()
    return data


def merge_into(histogram: HdrHistogram, encoded: bytes | None) -> None:
    if encoded is not None:
        histogram.decode_and_add(encoded)


def summary_ms(histogram: HdrHistogram) -> dict[str, Any] | None:
    """p50/p95/p99/p99.9/max/mean in milliseconds, and the count; None when nothing was recorded."""
    count = histogram.get_total_count()
    if count == 0:
        return None
    values = histogram.get_percentile_to_value_dict(list(PERCENTILES))
    out: dict[str, Any] = {_key(p): round(values[p] / 1000, 3) for p in PERCENTILES}
    out["max"] = round(histogram.get_max_value() / 1000, 3)
    out["mean"] = round(histogram.get_mean_value() / 1000, 3)
    out["count"] = count
    return out


def _key(percentile: float) -> str:
    return "p" + f"{percentile:g}".replace(".", "")


def cdf_points(histogram: HdrHistogram) -> list[tuple[float, float]]:
    """(latency ms, fraction of deliveries at or below it) for plotting a CDF."""
    total = histogram.get_total_count()
    if total == 0:
        return []
    points = []
    for item in histogram.get_recorded_iterator():
        points.append((item.value_iterated_to / 1000, item.total_count_to_this_value / total))
    return points
