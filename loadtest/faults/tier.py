"""How big and how long each fault run is: ``ci`` (minutes on 2 cores) and ``long``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """Sizes and durations of every fault of one tier (seconds unless said)."""

    name: str
    nodes: int = 2
    writers: int
    """Writers of the main wedding, spread over the nodes."""
    interval: float
    """Seconds between two edits of one writer."""
    fault_seconds: float
    """How long a fault holds (a pause is held past the lease, whatever this says)."""
    after_heal_seconds: float
    """The writers go on this long after the heal."""
    converge_timeout: float
    """Seconds allowed to converge after the heal before the run reports a failure."""
    lease_seconds: float
    database_timeout: float
    """GATEWAY_DATABASE_TIMEOUT: a short one makes a stuck Postgres show within the fault."""
    ping_interval: float
    ping_timeout: float
    """GATEWAY_WS_PING_TIMEOUT, when the gateway has that setting (uvicorn's 20 s otherwise)."""
    storm_clients: int
    non_readers: int
    slow_readers: int
    joiners: int
    """New clients joining new weddings while the table lock holds."""
    disk_mb: int = 8


CI = Tier(
    name="ci",
    writers=4,
    interval=0.05,
    fault_seconds=3.0,
    after_heal_seconds=1.0,
    converge_timeout=30.0,
    lease_seconds=1.5,
    database_timeout=2.0,
    ping_interval=1.0,
    ping_timeout=1.0,
    storm_clients=60,
    non_readers=4,
    slow_readers=2,
    joiners=3,
)

LONG = Tier(
    name="long",
    writers=100,
    interval=0.5,
    fault_seconds=10.0,
    after_heal_seconds=3.0,
    converge_timeout=90.0,
    lease_seconds=3.0,
    database_timeout=3.0,
    ping_interval=5.0,
    ping_timeout=5.0,
    storm_clients=300,
    non_readers=50,
    slow_readers=20,
    joiners=20,
)

TIERS = {tier.name: tier for tier in (CI, LONG)}
