"""Prometheus metrics, read at scrape time: the node's statistics() and its telemetry (the
hot-path instruments of gateway/telemetry.py), never computed per message here."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.mux import MuxEndpoint
from gateway.node import Node
from gateway.slot import RoomState
from gateway.telemetry import Histogram, Telemetry

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
ALWAYS_SUPERVISED = ("committer", "ownership", "loop_lag")
"""Tasks every node runs (gateway/node.py): their failure series exist from the start, at 0, so
that ``increase()`` sees the first failure."""


class NodeCollector(Collector):
    """Exports one node's counters and gauges."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Family]:
        stats = self.node.statistics()
        yield GaugeMetricFamily("gateway_rooms", "Rooms loaded on this node.", value=stats.rooms)
        ready = self.node.readiness()
        yield GaugeMetricFamily(
            "gateway_store_up",
            "1 while the store commits (0: acks are paused, /readyz says why).",
            value=int(ready["store"]),
        )
        yield GaugeMetricFamily(
            "gateway_bus_up",
            "1 while the bus delivers (0: cross-node delivery is delayed or stopped).",
            value=int(ready["bus"]),
        )
        failures = CounterMetricFamily(
            "gateway_task_failures",
            "Background tasks that failed unexpectedly (restarted, or the job was dropped).",
            labels=["task"],
        )
        counts = {**dict.fromkeys(ALWAYS_SUPERVISED, 0), **self.node.supervisor.failures}
        for task, count in sorted(counts.items()):
            failures.add_metric([task], count)
        yield failures
        yield GaugeMetricFamily(
            "gateway_connections", "Client connections on this node.", value=stats.connections
        )
        yield CounterMetricFamily(
            "gateway_messages_received",
            "Messages received from clients.",
            value=stats.messages_received,
        )
        yield CounterMetricFamily(
            "gateway_updates_persisted",
            "Updates submitted to the durable log.",
            value=stats.updates_persisted,
        )
        yield CounterMetricFamily(
            "gateway_changes_refused",
            "Changes refused by the role and schema checks, and undone (proto/spec.md §7).",
            value=stats.refusals,
        )
        yield GaugeMetricFamily(
            "gateway_rooms_owned",
            "Rooms this node judges: it holds their lease (DESIGN.md §2).",
            value=stats.owned_rooms,
        )
        yield CounterMetricFamily(
            "gateway_ownership_changes",
            "Rooms this node took, released or lost the lease of.",
            value=stats.ownership_changes,
        )
        yield CounterMetricFamily(
            "gateway_updates_relayed",
            "Client updates forwarded to the node that owns their room.",
            value=stats.relayed_updates,
        )
        yield CounterMetricFamily(
            "gateway_appends_fenced",
            "Appends the store refused because the room's lease had been taken over.",
            value=stats.committer.fenced,
        )
        yield CounterMetricFamily(
            "gateway_compactions", "Room logs compacted into snapshots.", value=stats.compactions
        )
        yield GaugeMetricFamily(
            "gateway_appends_pending",
            "Appends waiting for the store.",
            value=stats.committer.pending,
        )
        yield CounterMetricFamily(
            "gateway_commit_batches",
            "Store transactions (group commits).",
            value=stats.committer.batches,
        )
        yield CounterMetricFamily(
            "gateway_store_failures",
            "Failed store appends (retried).",
            value=stats.committer.failures,
        )
        yield from webhook_metrics(self.node)
        yield from latency_metrics(self.node.telemetry)
        yield from event_metrics(self.node, self.node.telemetry)
        yield from warm_metrics(self.node)


def webhook_metrics(node: Node) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Per webhook endpoint: dead letter, batches delivered, failed tries (gateway/webhooks.py)."""
    dispatcher = node.webhooks
    if dispatcher is None:
        return
    dead = GaugeMetricFamily(
        "gateway_webhook_dead",
        "1 for an endpoint that failed for the dead-letter time: nothing is sent to it.",
        labels=["endpoint"],
    )
    delivered = CounterMetricFamily(
        "gateway_webhook_batches_delivered",
        "Change batches acknowledged by the endpoint (by this node).",
        labels=["endpoint"],
    )
    failed = CounterMetricFamily(
        "gateway_webhook_failed_attempts",
        "POSTs of a batch that got no 2xx (each is retried with backoff).",
        labels=["endpoint"],
    )
    for endpoint, stats in sorted(dispatcher.stats.endpoints.items()):
        dead.add_metric([endpoint], int(stats.dead))
        delivered.add_metric([endpoint], stats.delivered_batches)
        failed.add_metric([endpoint], stats.failed_attempts)
    yield from (dead, delivered, failed)


# -- what explains latency (issue 16): histograms, and counters of what clients notice ----------

HISTOGRAMS = (
    ("gateway_edit_broadcast_seconds", "edit_broadcast",
     "A client's document update, frame received to broadcast queued (on the room's owner)."),
    ("gateway_edit_ack_seconds", "edit_ack",
     "A client's update, frame received to its durable ACK queued (on the client's node)."),
    ("gateway_store_commit_seconds", "store_commit",
     "One store transaction of the group commit (retries of a failing store included)."),
    ("gateway_store_batch_appends", "store_batch", "Appends per store transaction."),
    ("gateway_bus_lag_seconds", "bus_lag",
     "Publish on another node to receipt here (Redis bus; wall clocks, as synchronised)."),
    ("gateway_relay_ack_seconds", "relay_ack",
     "A relayed update, forwarded to its room's owner to the owner's ACK back here."),
    ("gateway_event_loop_lag_seconds", "loop_lag",
     "How late the event loop ran a timer: what a ready client frame waits behind others."),
)  # fmt: skip
PHASES = (("guard", "phase_guard"), ("apply", "phase_apply"), ("enforce", "phase_enforce"))


def _add(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), histogram.total)


def latency_metrics(telemetry: Telemetry) -> Iterator[Family]:
    """The latency histograms (gateway/telemetry.py), every family even before a sample."""
    for name, attribute, documentation in HISTOGRAMS:
        family = HistogramMetricFamily(name, documentation)
        _add(family, [], getattr(telemetry, attribute))
        yield family
    phases = HistogramMetricFamily(
        "gateway_update_phase_seconds",
        "CPU time of one judged client update by phase: guard (reading it), apply (pycrdt), "
        "enforce (role and schema verdict, undo).",
        labels=["phase"],
    )
    for phase, attribute in PHASES:
        _add(phases, [phase], getattr(telemetry, attribute))
    yield phases


def event_metrics(node: Node, telemetry: Telemetry) -> Iterator[Family]:
    """Closes, refusals, repairs; rooms by state and connections by platform."""
    closes = CounterMetricFamily(
        "gateway_connections_closed",
        "Client connections closed, by close code (proto/spec.md §6; other: any code not there).",
        labels=["code"],
    )
    for code, count in sorted(telemetry.closes.items()):
        closes.add_metric([code], count)
    yield closes
    yield CounterMetricFamily(
        "gateway_slow_client_closes",
        "Clients closed for not reading what they are sent (4001).",
        value=telemetry.slow_client_closes,
    )
    refusals = CounterMetricFamily(
        "gateway_refusals",
        "Changes refused and undone, by area (core, timeline, document) and reason "
        "(permission: the role may not; schema: the value is invalid).",
        labels=["area", "reason"],
    )
    for (area, reason), count in sorted(telemetry.refusals.items()):
        refusals.add_metric([area, reason], count)
    yield refusals
    yield CounterMetricFamily(
        "gateway_repairs",
        "Rooms rebuilt from the store after bus messages were lost.",
        value=node.peers.repairs,
    )
    states = GaugeMetricFamily(
        "gateway_rooms_by_state", "Rooms on this node by lifecycle state.", labels=["state"]
    )
    counts = dict.fromkeys(RoomState, 0)
    for slot in list(node.rooms.slots.values()):
        counts[slot.state] += 1
    for state, count in counts.items():
        states.add_metric([state.value], count)
    yield states
    platforms = GaugeMetricFamily(
        "gateway_connections_by_platform",
        "Client connections in a room, by the platform they declared (?platform=, spec §1).",
        labels=["platform"],
    )
    for platform, count in sorted(telemetry.platforms.items()):
        platforms.add_metric([platform], count)
    yield platforms


# -- warm weddings, wedding-day priority, drain (issue 16 items 4-5; gateway/warm.py) ----------


def warm_metrics(node: Node) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Room-load hit ratio, warm rooms, the priority set, shed connections, drained clients.

    The hit ratio is ``rate(gateway_room_joins_total{source="memory"}[5m])`` over the rate of
    all joins: a join served by a room already loaded here, against one that loaded it."""
    rooms = node.rooms
    joins = CounterMetricFamily(
        "gateway_room_joins",
        "Client joins, by where the room came from: memory (loaded here) or store (loaded for it).",
        labels=["source"],
    )
    joins.add_metric(["memory"], rooms.joins_from_memory)
    joins.add_metric(["store"], rooms.joins_from_store)
    yield joins
    warm = node.warmer.warm if node.warmer is not None else []
    yield GaugeMetricFamily(
        "gateway_rooms_warm",
        "Rooms kept loaded without members: weddings of the coming days (GATEWAY_WARM_DAYS).",
        value=len(warm),
    )
    yield GaugeMetricFamily(
        "gateway_priority_weddings",
        "Weddings within GATEWAY_PRIORITY_HOURS (cluster-wide, from the store's date index).",
        value=len(node.calendar.priority),
    )
    shed = CounterMetricFamily(
        "gateway_connections_shed",
        "New connections refused with 1013 under overload (weddings outside the priority window).",
        labels=["reason"],
    )
    for reason, count in sorted((node.overload.shed if node.overload else {}).items()):
        shed.add_metric([reason], count)
    yield shed
    yield CounterMetricFamily(
        "gateway_drained_clients",
        "Clients told to reconnect (DRAIN, 1012) by this node's drain, over its spread.",
        value=node.drained_clients,
    )


def render(node: Node, mux: MuxEndpoint | None = None) -> bytes:
    """The Prometheus text exposition of ``node`` (and of its ``/mux`` sockets)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    if mux is not None:
        registry.register(MuxCollector(mux))
    return generate_latest(registry)


class MuxCollector(Collector):
    """``/mux`` sockets (gateway/mux.py). Each open document also counts as one of
    ``gateway_connections``: it is one member of its room."""

    def __init__(self, mux: MuxEndpoint) -> None:
        self.mux = mux

    def collect(self) -> Iterator[Family]:
        stats = self.mux.statistics()
        yield GaugeMetricFamily(
            "gateway_mux_sockets", "/mux sockets open on this node.", value=stats.sockets
        )
        yield GaugeMetricFamily(
            "gateway_mux_documents",
            "Documents open on this node's /mux sockets.",
            value=stats.documents,
        )
        yield CounterMetricFamily(
            "gateway_mux_documents_refused",
            "Documents refused on /mux (permission-denied: token, name, limit), since start.",
            value=stats.documents_refused,
        )
        yield CounterMetricFamily(
            "gateway_mux_messages_ignored",
            "/mux messages for a document not open (dropped), since start.",
            value=stats.messages_ignored,
        )
