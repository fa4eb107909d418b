"""``gateway``: the command line. Settings are read from GATEWAY_* variables once, here.

Commands: ``serve``, ``migrate``, ``check-config``, ``gen-token``, ``revoke``, ``audit``,
``restore`` (``gateway -h``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog
import uvicorn

from gateway.adapters.postgres_store import migrate
from gateway.adapters.redis_revocations import DEFAULT_GRACE, RedisRevocations
from gateway.adapters.uvicorn_ws import protocol_class
from gateway.app import GatewayApp, create_app
from gateway.auth import issue_token
from gateway.compiled import guard_compiled, stale_extensions
from gateway.core.policy import Role
from gateway.errors import BackendUnavailable, ConfigError
from gateway.logs import configure_logging
from gateway.memory_debug import install_snapshot_signal
from gateway.settings import Settings, gateway_environment
from gateway.types import parse_room_id

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":  # reports every problem itself, one per line
        from gateway import check_config  # only this command needs it

        try:
            return check_config.run(
                gateway_environment(), as_json=args.json, out=sys.stdout, err=sys.stderr
            )
        except BrokenPipeError:  # piped into head: the reader has what it wanted
            sys.stdout = None  # nothing left to flush at exit
            return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    match args.command:
        case "migrate":
            return run_migrate(settings, check=args.check)
        case "gen-token":
            return run_gen_token(settings, args)
        case "revoke":
            return run_revoke(settings, args.jti, expires_at=args.expires_at)
        case "audit":
            return run_audit(settings, args.wedding_id, limit=args.limit, as_json=args.json)
        case "restore":
            from gateway.restore_cli import run as run_restore  # only this command needs it

            return run_restore(settings, args)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        return serve_forever(dataclasses.replace(settings, **overrides))
    except ConfigError as exc:  # found while building the app: e.g. an unusable key file
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="WedSync real-time sync gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (embedded defaults: no services)")
    serve.add_argument("--host", help="interface to bind (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (GATEWAY_PORT, default 8000)")
    migrate = commands.add_parser("migrate", help="apply pending Postgres migrations")
    migrate.add_argument(
        "--check", action="store_true", help="apply nothing; exit 1 while migrations are pending"
    )
    check = commands.add_parser(
        "check-config",
        help="validate the GATEWAY_* environment; print the effective settings, secrets masked",
    )
    check.add_argument("--json", action="store_true", help="print the settings as one JSON object")
    add_gen_token_parser(commands)
    revoke = commands.add_parser("revoke", help="revoke a token on every node (through Redis)")
    revoke.add_argument("jti", metavar="JTI", help="the token's jti")
    revoke.add_argument(
        "--expires-at", type=float, required=True, metavar="UNIX", help="the token's exp"
    )
    audit = commands.add_parser("audit", help="list who changed what in a wedding")
    audit.add_argument("wedding_id", metavar="WEDDING_ID")
    audit.add_argument("--limit", type=int, default=1000, help="newest N entries (default 1000)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    restore = commands.add_parser(
        "restore", help="restore a wedding to a past state, through a running gateway"
    )
    restore.add_argument("wedding_id", metavar="WEDDING_ID")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--at", metavar="TIME", help="ISO 8601 time, e.g. 2026-06-01T14:00:00Z")
    target.add_argument("--offset", type=int, metavar="N", help="the state at this offset")
    restore.add_argument("--url", help="the gateway (default http://GATEWAY_HOST:GATEWAY_PORT)")
    restore.add_argument(
        "--token", help="an admin token (default: one signed with GATEWAY_JWT_SECRET)"
    )
    return parser


def add_gen_token_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = commands.add_parser(
        "gen-token",
        help="print a token signed with GATEWAY_JWT_SECRET",
        description="Each --wedding pairs with the --role at the same position.",
    )
    gen.add_argument("--subject", required=True, help="the user (claim sub)")
    gen.add_argument("--wedding", action="append", default=[], metavar="WEDDING_ID")
    gen.add_argument("--role", action="append", default=[], choices=[r.value for r in Role])
    gen.add_argument("--vendor-id", help="the vendor the user acts for (required with vendor)")
    gen.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS", help="default 3600")
    gen.add_argument("--admin", action="store_true", help="may revoke tokens")


def run_gen_token(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway gen-token``: print an HS256 token; exit 2 when it cannot be made."""
    problem = None
    if settings.jwt_secret is None:
        problem = "GATEWAY_JWT_SECRET is not set; gen-token signs with it"
    elif len(args.wedding) != len(args.role):
        problem = "give one --role for each --wedding, in the same order"
    elif not args.wedding and not args.admin:
        problem = "give at least one --wedding and --role (or --admin)"
    elif bad := [w for w in args.wedding if parse_room_id(w) is None]:
        problem = f"invalid wedding id {bad[0]!r}: use 1-64 of A-Z a-z 0-9 _ -"
    elif Role.VENDOR.value in args.role and not args.vendor_id:
        problem = "--role vendor needs --vendor-id"
    elif not (math.isfinite(args.ttl) and args.ttl > 0):
        problem = "--ttl must be positive"
    if problem is not None:
        print(f"gateway: {problem}", file=sys.stderr)
        return 2
    assert settings.jwt_secret is not None
    token = issue_token(
        settings.jwt_secret,
        subject=args.subject,
        weddings={w: Role(r) for w, r in zip(args.wedding, args.role, strict=True)},
        vendor_id=args.vendor_id,
        ttl_seconds=args.ttl,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        admin=args.admin,
    )
    print(token)
    return 0


def run_revoke(settings: Settings, jti: str, *, expires_at: float) -> int:
    """``gateway revoke JTI --expires-at UNIX``: through Redis, heard by every node at once."""
    if settings.redis_url is None:
        print(
            "gateway: GATEWAY_REDIS_URL is not set. In embedded mode revocations live in the"
            " gateway process: POST /v1/revocations with an admin token instead.",
            file=sys.stderr,
        )
        return 2
    if not math.isfinite(expires_at):
        print("gateway: --expires-at must be the token's exp (Unix seconds)", file=sys.stderr)
        return 2
    if expires_at < time.time() - DEFAULT_GRACE:
        print(f"gateway: {jti} expired at {expires_at:.0f}; nothing to revoke", file=sys.stderr)
        return 2

    async def revoke() -> None:
        url = str(settings.redis_url)
        async with RedisRevocations.connect(url, prefix=settings.redis_prefix) as revocations:
            await revocations.revoke(jti, expires_at)

    try:
        asyncio.run(revoke())
    except BackendUnavailable as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    print(f"revoked {jti} (kept until {expires_at:.0f})")
    return 0


def run_audit(settings: Settings, wedding_id: str, *, limit: int, as_json: bool) -> int:
    """``gateway audit WEDDING_ID [--limit N] [--json]`` (gateway/audit.py)."""
    from gateway.audit import run  # imported here: only this command needs it

    return run(settings, wedding_id, limit=limit, as_json=as_json)


def run_migrate(settings: Settings, *, check: bool) -> int:
    """``gateway migrate [--check]``: safe to run from several nodes at once."""
    if settings.database_url is None:
        print("gateway: GATEWAY_DATABASE_URL is not set; the SQLite store needs no migrations")
        return 0
    try:
        names = asyncio.run(
            migrate(str(settings.database_url), schema=settings.database_schema, check=check)
        )
    except BackendUnavailable as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if check:
        print("pending: " + ", ".join(names) if names else "up to date")
        return 1 if names else 0
    print("applied: " + ", ".join(names) if names else "up to date")
    return 0


def log_guard_build() -> None:
    """Say whether the update guard runs compiled (tools/compile_guard.py) or as Python."""
    stale = stale_extensions()
    if stale:
        names = ", ".join(p.name for p in stale)
        log.warning("guard_compiled_stale", extensions=names, fix="make install")
    log.info("guard_build", compiled=guard_compiled())


def serve_forever(settings: Settings) -> int:
    """Run the app under uvicorn with uvloop until SIGINT/SIGTERM (0), or until the process
    can no longer serve (1: gateway/supervision.py; the orchestrator starts a new one)."""

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    config = uvicorn_config(app, settings, loop="uvloop")
    tune_gc()
    install_snapshot_signal(settings.data_dir)  # development only: with PYTHONTRACEMALLOC
    log_guard_build()
    GatewayServer(config).run()
    failed = app.supervisor.failed
    if failed is not None:
        print(f"gateway: exiting: {failed}", file=sys.stderr)
        return 1
    return 0


def uvicorn_config(app: GatewayApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How uvicorn serves the gateway: its WebSocket protocol (gateway/adapters/uvicorn_ws.py)
    and limits from the settings."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": protocol_class(send_buffer_bytes=settings.socket_send_buffer_bytes),
        "ws_max_size": settings.max_message_bytes,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        "ws_ping_interval": settings.ws_ping_interval or None,
        "ws_ping_timeout": settings.ws_ping_timeout,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.drain_seconds) or None,
    }
    return uvicorn.Config(app, **{**options, **overrides})


class GatewayServer(uvicorn.Server):
    """uvicorn's server, draining the node before uvicorn closes its connections.

    uvicorn closes every WebSocket (1012) before the app's lifespan shutdown runs, which would
    lose the acks of appends still in flight and the DRAIN notice (proto/spec.md §4.5).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if isinstance(config.app, GatewayApp):  # a failed process stops: drain, then exit 1
            config.app.supervisor.on_failed(lambda reason: setattr(self, "should_exit", True))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, GatewayApp):
            await self.config.app.drain()
        await super().shutdown(sockets)


def tune_gc() -> None:
    """Keep the cycle collector from stalling the event loop (measured: README 'Performance').

    Objects alive after start-up (modules, classes) are frozen out of every collection, and the
    thresholds make full collections rarer; with the defaults a full collection under 1,000
    clients stalled the loop for ~90 ms every few seconds.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


if __name__ == "__main__":
    sys.exit(main())
