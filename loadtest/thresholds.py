"""``--fail-on 'p99>50'`` thresholds and ``compare``'s Markdown table."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_EXPRESSION = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*([-+\w.]+)\s*")
_SHORTHANDS = {"p50", "p95", "p99", "p999", "max", "mean"}  # → latency_ms.<key>


class ThresholdError(ValueError):
    """A --fail-on expression that cannot be parsed or names no number in the report."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """Fail the run when ``metric op value`` holds."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> list[Threshold]:
        """Parse ``'p99>50, lost>0'``: comma-separated ``metric op number`` conditions."""
        out = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = _EXPRESSION.fullmatch(part)
            if match is None:
                raise ThresholdError(f"{part!r} is not of the form 'metric>number', e.g. 'p99>50'")
            metric, op, raw = match.groups()
            out.append(cls(metric, op, _number(raw)))
        return out

    def violated(self, report: dict[str, Any]) -> tuple[bool, float | None]:
        """Return (does the failure condition hold, the measured value)."""
        measured = lookup(report, self.metric)
        if measured is None:
            return True, None  # nothing measured where a bound was asked for: fail
        return _OPERATORS[self.op](measured, self.value), measured


def _number(raw: str) -> float:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return float(lowered == "true")
    try:
        return float(raw)
    except ValueError:
        raise ThresholdError(f"{raw!r} is not a number") from None


def lookup(report: dict[str, Any], metric: str) -> float | None:
    """A number in the report by dotted path; p50…max are shorthands for latency_ms.*"""
    path = f"latency_ms.{metric}" if metric in _SHORTHANDS else metric
    value: Any = report
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if value is None:
                return None
            raise ThresholdError(f"the report has no number at {path!r}")
        value = value[key]
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    raise ThresholdError(f"{path!r} is not a number in the report")


ROWS: list[tuple[str, str]] = [
    ("scenario", "scenario"),
    ("server", "urls"),
    ("clients", "clients"),
    ("weddings", "weddings"),
    ("edits/s sent", "edits_per_s"),
    ("deliveries/s", "updates_per_s"),
    ("lost", "lost"),
    ("converged", "converged"),
    ("latency p50 (ms)", "latency_ms.p50"),
    ("latency p95 (ms)", "latency_ms.p95"),
    ("latency p99 (ms)", "latency_ms.p99"),
    ("latency p99.9 (ms)", "latency_ms.p999"),
    ("latency max (ms)", "latency_ms.max"),
    ("durable ack p99 (ms)", "ack_latency_ms.p99"),
    ("initial sync p99 (ms)", "initial_sync_ms.p99"),
    ("server CPU (%)", "server.cpu_percent"),
    ("server CPU µs/delivery", "server.cpu_us_per_delivery"),
    ("bytes in/delivery (wire)", "wire.bytes_in_per_delivery"),
    ("messages in/delivery", "wire.messages_in_per_delivery"),
    ("server RSS (MB)", "server.rss_mb"),
    ("server KB/connection", "server.rss_kb_per_connection"),
    ("generator CPU (%)", "generator_cpu_percent"),
    ("errors", "errors"),
]


def compare_table(reports: list[tuple[Path, dict[str, Any]]]) -> str:
    """A Markdown table with one column per report."""
    header = "| metric | " + " | ".join(path.stem for path, _ in reports) + " |"
    lines = [header, "|---|" + "---:|" * len(reports)]
    for label, path in ROWS:
        cells = [_cell(_dig(report, path)) for _, report in reports]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _dig(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return str(sum(value.values())) if value else "0"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
