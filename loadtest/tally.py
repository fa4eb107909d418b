"""What one worker process counts; sent to the parent as plain data."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest import stats

REFUSED = "refused"  # the error key's prefix: "refused core.notes"
MAX_REFUSAL_SAMPLES = 5
_ENTRY = re.compile(r"\[[^\]]*\]")  # timeline[lt-3-7].start → timeline[].start (one error key)


@dataclass(eq=False)
class Tally:
    """Counters and histograms of one worker. Single-threaded: the worker's event loop."""

    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    superseded: int = 0  # core fields: values overwritten before a receiver saw them
    unacked: int = 0  # edits whose connection closed before their ack
    skipped_offline: int = 0  # scheduled edits not made: the client was disconnected
    messages_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deflate_connections: int = 0  # connections on which the server accepted permessage-deflate
    load_start: dict[str, int] = field(default_factory=dict)
    """bytes_in, bytes_out and messages_in when the load started (connections and initial syncs
    are behind): the report's ``wire`` section counts from here."""
    errors: Counter[str] = field(default_factory=Counter)
    latency: HdrHistogram = field(default_factory=stats.new_histogram)
    wire_latency: HdrHistogram = field(default_factory=stats.new_histogram)  # from actual send
    interval: HdrHistogram = field(default_factory=stats.new_histogram)  # since the last tick
    ack_latency: HdrHistogram = field(default_factory=stats.new_histogram)
    connect: HdrHistogram = field(default_factory=stats.new_histogram)
    initial_sync: HdrHistogram = field(default_factory=stats.new_histogram)
    reconnect: HdrHistogram = field(default_factory=stats.new_histogram)
    send_lag: HdrHistogram = field(default_factory=stats.new_histogram)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, str]] = field(default_factory=list)  # the first few REJECTs

    def refused(self, field_name: str, reason: str) -> None:
        """The server refused and undid a change of an edit (REJECT, proto/spec.md §4.4)."""
        self.errors[f"{REFUSED} {_ENTRY.sub('[]', field_name)}"] += 1
        if len(self.refusals) < MAX_REFUSAL_SAMPLES:
            self.refusals.append({"field": field_name, "reason": reason})

    def tick(self) -> dict[str, Any]:
        """A progress snapshot for the parent; starts a new latency interval."""
        snapshot = {
            "sent": self.sent,
            "delivered": self.delivered,
            "errors": sum(self.errors.values()),
            "interval": stats.encode(self.interval),
        }
        self.interval.reset()
        return snapshot

    def final(self) -> dict[str, Any]:
        """Everything, for the report."""
        histograms = (
            "latency",
            "wire_latency",
            "ack_latency",
            "connect",
            "initial_sync",
            "reconnect",
            "send_lag",
        )
        counters = ("sent", "delivered", "duplicates", "superseded", "unacked", "skipped_offline")
        out: dict[str, Any] = {name: getattr(self, name) for name in counters}
        out["messages_in"] = self.messages_in
        out["bytes_in"] = self.bytes_in
        out["bytes_out"] = self.bytes_out
        out["deflate_connections"] = self.deflate_connections
        out["load_start"] = self.load_start
        out["errors"] = dict(self.errors)
        out["histograms"] = {name: stats.encode(getattr(self, name)) for name in histograms}
        out["resumes"] = self.resumes
        out["refusals"] = self.refusals
        return out
