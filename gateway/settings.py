"""Every knob of the gateway, read once from GATEWAY_* environment variables.

Each field is listed in README.md 'Configuration'; tests keep the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from starlette.datastructures import Secret

from gateway.errors import ConfigError

PREFIX = "GATEWAY_"
ENVIRONMENTS = ("development", "production")
MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 300.0  # a larger leeway would make ``exp`` meaningless


def _random_node_id() -> str:
    return f"node-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of the gateway. Built once in the CLI; listed in README 'Configuration'."""

    host: str = "127.0.0.1"
    port: int = 8000
    node_id: str = field(default_factory=_random_node_id)
    data_dir: Path = Path("data")
    redis_url: Secret | None = None  # None → in-memory bus (one node)
    redis_prefix: str = "wedsync"  # channel names: {prefix}:room:{<wedding>}
    redis_sharded: bool = False  # SPUBLISH/SSUBSCRIBE (Redis 7+, cluster-friendly slots)
    bus_send_time: bool = True  # stamp bus envelopes for gateway_bus_lag_seconds (see README)
    redis_stall_seconds: float = 2.0  # Redis unanswered this long: the bus is down (/readyz)
    database_url: Secret | None = None  # None → SQLite store in data_dir (embedded default)
    database_schema: str = "public"  # Postgres schema holding the gateway's tables
    database_pool_max: int = 10  # Postgres connections per node
    database_timeout: float = 10.0  # seconds per Postgres command
    log_level: str = "info"
    log_format: str = "json"  # json | console
    max_message_bytes: int = 1 << 20  # larger frames close with 1009
    client_queue_limit: int = 256  # outbound messages per client; beyond: collapsed (backlog)
    client_outbox_bytes: int = 4 << 20  # bytes waiting for one client (ours + transport's); beyond:
    # collapsed; a collapsed backlog over these bounds closes the client with 4001
    client_drain_timeout: float = 30.0  # behind (collapsing) this long: closed with 4001
    socket_send_buffer_bytes: int = 262144  # SO_SNDBUF of each WebSocket; 0: kernel autotuning
    ws_per_message_deflate: bool = False  # measured choice: DESIGN.md §10
    ws_ping_interval: float = 20.0  # seconds between keepalive pings; 0 disables
    ws_ping_timeout: float = 20.0  # a ping unanswered this long closes the client (4001)
    broadcast_batch_ms: float = 0.0  # hold a room's updates this long, send them merged; 0: off
    resume_log_max_updates: int = 500  # RESUME further behind: the diff, no log read and merge
    room_idle_seconds: float = 30.0  # an empty room stays loaded this long
    malloc_trim_seconds: float = 30.0  # after rooms unload, trim the heap this often at most
    lease_seconds: float = 3.0  # a wedding's owner lease (Postgres); renewed every third of it
    relay_resend_seconds: float = 2.0  # an update relayed to the owner, unanswered: sent again
    relay_timeout_seconds: float = 10.0  # no answer from the owner this long: close 4002
    relay_max_outstanding: int = 256  # relayed updates unanswered per client; more: not read
    snapshot_every: int = 500  # compact a room's log after this many appended updates
    commit_batch_max: int = 512  # appends per store transaction
    max_pending_appends: int = 10_000  # beyond this, writers are closed with 4002
    max_awareness_entries: int = 64  # entries in one awareness message
    max_awareness_state_bytes: int = 16 << 10  # characters of one awareness state
    messages_per_second: float = 200.0  # per client; faster is paced (its reads paused)
    message_burst: int = 400  # per client, messages allowed at once above the rate
    bytes_per_second: float = 2 << 20  # per client; faster is paced (its reads paused)
    byte_burst: int = 8 << 20  # per client; at least max_message_bytes
    rate_pacing_seconds: float = 10.0  # paced longer than this per window: closed with 4429
    rate_window_seconds: float = 60.0  # the window over which pacing is counted
    handshake_timeout_seconds: float = 15.0  # until the client's sync step 1; else 4408
    drain_seconds: float = 10.0  # on shutdown, time given to flush before closing
    drain_spread_seconds: float = 5.0  # clients are closed at random times over this window
    warm_days: int = 7  # weddings dated within this many days are kept loaded (gateway/warm.py)
    warm_max_rooms: int = 2000  # at most this many warm rooms per node; 0: no warming
    warm_refresh_seconds: float = 60.0  # the warm set is looked up in the store this often
    priority_hours: float = 48.0  # weddings this close keep their connections under overload
    priority_max_weddings: int = 100_000  # largest priority set (index rows) a node keeps
    shed_pending_appends: int = 5000  # appends pending: new far-off connections get 1013
    shed_loop_lag_seconds: float = 0.25  # event-loop lag: new far-off connections get 1013
    environment: str = "development"  # development | production (production requires keys)
    jwt_secret: Secret | None = None  # HS256 key, at least 32 bytes
    jwt_public_keys: Path | None = None  # PEM (one public key) or JWKS file: RS256 / ES256
    jwt_issuer: str = "wedsync"  # required ``iss`` of every token
    jwt_audience: str = "wedsync-gateway"  # required ``aud`` of every token
    jwt_leeway_seconds: float = 30.0  # clock skew allowed on exp / nbf / iat (0-300)
    history_retention_seconds: float = 7_776_000.0  # 90 days of restorable history; 0: off
    history_checkpoint_seconds: float = 3600.0  # keep a compaction's snapshot at most this often
    history_page_max: int = 500  # largest ?limit= of /versions and /changes
    history_write_timeout_seconds: float = 10.0  # restore/undo/PATCH wait this long for the ack
    undo_max_updates: int = 10_000  # an undo reads at most this many updates since its time
    changes_poll_seconds: float = 1.0  # the SSE stream and webhooks look for changes this often
    sse_keepalive_seconds: float = 15.0  # a comment line on a quiet change stream
    webhook_urls: str = ""  # comma-separated receiver URLs (besides those of the admin API)
    webhook_secret: Secret | None = None  # HMAC-SHA256 key of GATEWAY_WEBHOOK_URLS' signatures
    webhook_timeout_seconds: float = 10.0  # one POST of a batch
    webhook_batch_max: int = 100  # change sets per POST
    webhook_retry_max_seconds: float = 60.0  # longest backoff between tries (jittered)
    webhook_dead_letter_seconds: float = 3600.0  # failing this long: the endpoint is dead
    webhook_claim_seconds: float = 30.0  # one node delivers to an endpoint; its claim lasts this
    # /mux (many weddings over one socket, proto/spec.md §10): per-socket bounds
    mux_max_documents: int = 100  # documents open on one socket; more: permission-denied
    mux_messages_per_second: float = 1000.0  # per socket; faster is paced, then 4429
    mux_message_burst: int = 2000  # per socket, messages allowed at once above the rate
    mux_bytes_per_second: float = 8 << 20  # per socket; faster is paced, then 4429
    mux_byte_burst: int = 16 << 20  # per socket; at least max_message_bytes
    mux_outbox_messages: int = 4096  # messages waiting for one socket; beyond: closed with 4001
    mux_outbox_bytes: int = 16 << 20  # bytes waiting for one socket; beyond: closed with 4001
    mux_document_queue: int = 64  # messages of one loading document held; beyond: socket waits
    mux_ping_seconds: float = 10.0  # the provider's ping (it drops a socket silent for 30 s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        """Read GATEWAY_* variables; report every bad key in one ConfigError."""
        values: dict[str, Any] = {}
        errors: list[str] = []
        known = {f.name for f in dataclasses.fields(cls)}
        for key in environ:
            unknown = key.startswith(PREFIX) and key[len(PREFIX) :].lower() not in known
            if unknown and not key.startswith(("GATEWAY_TEST_", "GATEWAY_LOADTEST_")):
                errors.append(f"{key} is not a known setting.")
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            if name not in environ:
                continue
            try:
                values[f.name] = _parse(str(f.type), environ[name])
            except ValueError as exc:
                errors.append(f"{name} has value {environ[name]!r}. {exc}")
        if errors:
            raise ConfigError(" ".join(errors), tuple(errors))
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ConfigError when values are individually valid but unusable."""
        problems = [
            f"GATEWAY_{name.upper()} must be positive."
            for name in (
                "max_message_bytes",
                "client_queue_limit",
                "client_outbox_bytes",
                "client_drain_timeout",
                "ws_ping_timeout",
                "redis_stall_seconds",
                "snapshot_every",
                "commit_batch_max",
                "max_pending_appends",
                "max_awareness_entries",
                "max_awareness_state_bytes",
                "message_burst",
                "handshake_timeout_seconds",
                "database_pool_max",
                "resume_log_max_updates",
                "database_timeout",
                "lease_seconds",
                "relay_resend_seconds",
                "relay_max_outstanding",
                "history_checkpoint_seconds",
                "history_page_max",
                "history_write_timeout_seconds",
                "undo_max_updates",
                "changes_poll_seconds",
                "sse_keepalive_seconds",
                "webhook_timeout_seconds",
                "webhook_batch_max",
                "webhook_retry_max_seconds",
                "webhook_dead_letter_seconds",
                "webhook_claim_seconds",
                "rate_pacing_seconds",
                "rate_window_seconds",
                "mux_max_documents",
                "mux_messages_per_second",
                "mux_message_burst",
                "mux_bytes_per_second",
                "mux_outbox_messages",
                "mux_document_queue",
                "mux_ping_seconds",
                "warm_refresh_seconds",
                "priority_max_weddings",
                "shed_pending_appends",
                "shed_loop_lag_seconds",
            )
            if getattr(self, name) <= 0
        ]
        if self.client_outbox_bytes < self.max_message_bytes:
            problems.append(
                "GATEWAY_CLIENT_OUTBOX_BYTES must be at least GATEWAY_MAX_MESSAGE_BYTES."
            )
        if self.socket_send_buffer_bytes < 0:
            problems.append("GATEWAY_SOCKET_SEND_BUFFER_BYTES must be 0 (kernel default) or more.")
        if self.relay_timeout_seconds <= self.relay_resend_seconds:
            problems.append(
                "GATEWAY_RELAY_TIMEOUT_SECONDS must be longer than GATEWAY_RELAY_RESEND_SECONDS."
            )
        if self.warm_days < 0 or self.warm_max_rooms < 0 or self.priority_hours < 0:
            problems.append(
                "GATEWAY_WARM_DAYS, GATEWAY_WARM_MAX_ROOMS and GATEWAY_PRIORITY_HOURS must be 0"
                " or positive."
            )
        if self.shed_pending_appends >= self.max_pending_appends:
            problems.append(  # shedding must start before writers of every wedding are refused
                "GATEWAY_SHED_PENDING_APPENDS must be below GATEWAY_MAX_PENDING_APPENDS."
            )
        if self.drain_spread_seconds < 0:
            problems.append("GATEWAY_DRAIN_SPREAD_SECONDS must be 0 (all at once) or positive.")
        if self.malloc_trim_seconds < 0:
            problems.append("GATEWAY_MALLOC_TRIM_SECONDS must be 0 (off) or positive.")
        if self.broadcast_batch_ms < 0:
            problems.append("GATEWAY_BROADCAST_BATCH_MS must be 0 (off) or positive.")
        if min(self.mux_byte_burst, self.mux_outbox_bytes) < self.max_message_bytes:
            problems.append(
                "GATEWAY_MUX_BYTE_BURST and GATEWAY_MUX_OUTBOX_BYTES must be at least"
                " GATEWAY_MAX_MESSAGE_BYTES."
            )
        if self.byte_burst < self.max_message_bytes:
            problems.append("GATEWAY_BYTE_BURST must be at least GATEWAY_MAX_MESSAGE_BYTES.")
        if min(self.messages_per_second, self.bytes_per_second) <= 0:
            problems.append("GATEWAY_MESSAGES_PER_SECOND and GATEWAY_BYTES_PER_SECOND must be > 0.")
        if self.history_retention_seconds < 0:
            problems.append("GATEWAY_HISTORY_RETENTION_SECONDS must be 0 (off) or positive.")
        if self.webhook_urls and self.webhook_secret is None:
            problems.append("GATEWAY_WEBHOOK_URLS needs GATEWAY_WEBHOOK_SECRET to sign with.")
        if self.webhook_claim_seconds <= self.webhook_timeout_seconds:
            problems.append(
                "GATEWAY_WEBHOOK_CLAIM_SECONDS must be longer than GATEWAY_WEBHOOK_TIMEOUT_SECONDS."
            )
        if not 0 < self.port < 65536:
            problems.append("GATEWAY_PORT must be between 1 and 65535.")
        if self.log_format not in ("json", "console"):
            problems.append("GATEWAY_LOG_FORMAT must be 'json' or 'console'.")
        problems.extend(self._auth_problems())
        if problems:
            raise ConfigError(" ".join(problems), tuple(problems))

    @property
    def webhook_url_list(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in self.webhook_urls.split(",") if url.strip())

    def _auth_problems(self) -> list[str]:
        problems = []
        if self.environment not in ENVIRONMENTS:
            problems.append("GATEWAY_ENVIRONMENT must be 'development' or 'production'.")
        keyless = self.jwt_secret is None and self.jwt_public_keys is None
        if self.environment == "production" and keyless:
            problems.append(
                "GATEWAY_ENVIRONMENT is 'production' but neither GATEWAY_JWT_SECRET nor"
                " GATEWAY_JWT_PUBLIC_KEYS is set: production never runs without tokens."
            )
        if self.jwt_secret is not None and len(str(self.jwt_secret).encode()) < MIN_SECRET_BYTES:
            problems.append(  # RFC 7518 §3.2: an HS256 key is at least as long as the hash
                f"GATEWAY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long."
            )
        if not self.jwt_issuer or not self.jwt_audience:
            problems.append("GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE must not be empty.")
        if not 0 <= self.jwt_leeway_seconds <= MAX_LEEWAY_SECONDS:
            problems.append(
                f"GATEWAY_JWT_LEEWAY_SECONDS must be between 0 and {MAX_LEEWAY_SECONDS:g}."
            )
        return problems


def gateway_environment() -> dict[str, str]:
    """The process's GATEWAY_* variables (``gateway check-config`` says which ones are set)."""
    return {key: value for key, value in os.environ.items() if key.startswith(PREFIX)}


def _parse(annotation: str, raw: str) -> Any:
    if annotation == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("Not a valid int.") from None
    if annotation == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("Not a valid float.") from None
    if annotation == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("Not a valid bool (use true or false).")
    if annotation == "Path":
        return Path(raw)
    if annotation == "Path | None":
        return Path(raw) if raw else None
    if annotation == "Secret | None":
        return Secret(raw) if raw else None
    return raw
