"""What one load-test run does: the scenario and its numbers (built once by the CLI)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

WEDDING_AUTHOR_CLIENT_ID = 1
"""The Yjs client id that writes each wedding's required core fields (client.py)."""
FIRST_DOC_CLIENT_ID = 2
"""Client ``n`` edits with Yjs client id ``FIRST_DOC_CLIENT_ID + n``."""


class Scenario(enum.StrEnum):
    """The shapes of load the kit can drive (loadtest/README.md, "Scenarios")."""

    STEADY = "steady"
    SPIKE = "spike"
    JOIN_STORM = "join-storm"
    RECONNECT_STORM = "reconnect-storm"
    BIG_WEDDING = "big-wedding"
    OFFLINE_RESUME = "offline-resume"
    IDLE = "idle"


class Target(enum.StrEnum):
    """What an edit changes: ``core["notes"]`` or a new timeline entry (proto/schema.md)."""

    CORE = "core"
    TIMELINE = "timeline"


class AckMode(enum.StrEnum):
    """Whether to send the gateway's HELLO (durable acks): auto = send it, use it if answered."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Every knob of one run. Picklable: each worker process gets a copy."""

    urls: tuple[str, ...]
    scenario: Scenario
    weddings: int
    clients: int  # per wedding
    rate: float  # edits/s per client
    duration: float  # seconds of editing
    target: Target = Target.CORE
    acks: AckMode = AckMode.AUTO
    deflate: bool = False  # offer permessage-deflate (the server decides)
    resume: bool = False  # reconnect with RESUME (gateway only, proto/spec.md §4.6)
    workers: int = 1
    run_id: str = "run"
    connect_concurrency: int = 50  # per worker; 0 = all at once
    settle_timeout: float = 10.0  # seconds to wait for the last deliveries and acks
    spike_factor: float = 10.0
    jitter: float = 1.0  # reconnect-storm: reconnect delays are uniform in [0, jitter] s
    missed: int = 200  # offline-resume: edits the resuming client misses
    seed: int = 1

    @property
    def total_clients(self) -> int:
        return self.weddings * self.clients

    def wedding_of(self, client: int) -> int:
        return client // self.clients

    def wedding_id(self, wedding: int) -> str:
        return f"lt-{self.run_id}-{wedding}"

    def url_of(self, client: int) -> str:
        """Clients of one wedding are spread round-robin over the URLs (cross-node fan-out)."""
        base = self.urls[(client % self.clients) % len(self.urls)].rstrip("/")
        return f"{base}/{self.wedding_id(self.wedding_of(client))}"

    def doc_client_id(self, client: int) -> int:
        """The Yjs client id of ``client``'s Doc: known to every member, so a receiver can read
        from its state vector how many of a sender's edits it holds (client.py, ``Target.CORE``).
        """
        return FIRST_DOC_CLIENT_ID + client

    def members(self, wedding: int) -> range:
        return range(wedding * self.clients, (wedding + 1) * self.clients)

    def rate_at(self, elapsed: float) -> float:
        """Edits/s per client at ``elapsed`` seconds into the run (spike: x factor mid-run)."""
        if (
            self.scenario is Scenario.SPIKE
            and self.spike_window[0] <= elapsed < self.spike_window[1]
        ):
            return self.rate * self.spike_factor
        return self.rate

    @property
    def spike_window(self) -> tuple[float, float]:
        """The middle third of the run."""
        return (self.duration / 3, 2 * self.duration / 3)

    @property
    def edits(self) -> bool:
        return self.scenario is not Scenario.IDLE and self.rate > 0

    @property
    def drop_at(self) -> float:
        """reconnect-storm: seconds into the run at which every client drops."""
        return self.duration / 3

    def is_resumer(self, client: int) -> bool:
        """offline-resume: the last client of each wedding goes offline, then resumes."""
        return (
            self.scenario is Scenario.OFFLINE_RESUME and client % self.clients == self.clients - 1
        )

    @property
    def offline_seconds(self) -> float:
        """offline-resume: how long the resumer stays away to miss ``missed`` edits."""
        writers = max(1, self.clients - 1)
        return min(self.missed / (self.rate * writers), self.duration * 0.8)
