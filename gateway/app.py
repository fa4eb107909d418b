"""The Starlette application. The only place that picks implementations of the ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.memory_revocations import MemoryRevocations
from gateway.adapters.postgres_store import PostgresStore
from gateway.adapters.redis_bus import RedisBus
from gateway.adapters.redis_revocations import RedisRevocations
from gateway.adapters.sqlite_store import SqliteStore
from gateway.admin import reset_history, revoke_token, wedding_owner
from gateway.auth import TokenVerifier, log_development_mode
from gateway.change_feed import ChangeWatcher, FeedConfig, change_stream
from gateway.connection import WebSocketEndpoint
from gateway.core.limits import Limits
from gateway.crash_journal import CrashJournal
from gateway.demo import demo_routes
from gateway.gatekeeper import Gatekeeper
from gateway.history_api import (
    HistoryConfig,
    changes,
    patch_core,
    restore,
    undo,
    versions,
    wedding_view_or_past,
)
from gateway.http_api import wedding_resume
from gateway.http_errors import EXCEPTION_HANDLERS
from gateway.mux import MuxEndpoint, MuxLimits
from gateway.node import Node
from gateway.ops import ops_routes
from gateway.overload import ShedSettings
from gateway.ports import Bus, Cursors, Leases, Retention, Revocations, Store, Versions, Webhooks
from gateway.relay import RelaySettings
from gateway.settings import Settings
from gateway.supervision import Supervisor
from gateway.types import NodeId
from gateway.vendor_view import vendor_weddings
from gateway.warm import WarmSettings
from gateway.webhooks import (
    WebhookDispatcher,
    WebhookSettings,
    delete_webhook,
    list_webhooks,
    put_webhook,
)


async def open_bus(
    settings: Settings, stack: AsyncExitStack, supervisor: Supervisor | None = None
) -> Bus:
    """Redis pub/sub when GATEWAY_REDIS_URL is set, else the in-memory bus (one node)."""
    if settings.redis_url is None:
        return MemoryBus(NodeId(settings.node_id))
    bus = RedisBus.connect(
        str(settings.redis_url),
        node_id=NodeId(settings.node_id),
        prefix=settings.redis_prefix,
        sharded=settings.redis_sharded,
        stall_seconds=settings.redis_stall_seconds,
        supervisor=supervisor,
        send_time=settings.bus_send_time,
    )
    return await stack.enter_async_context(bus)


async def open_store(settings: Settings, stack: AsyncExitStack) -> Store:
    """Postgres when GATEWAY_DATABASE_URL is set, else SQLite in the data directory."""
    store, _ = await open_store_and_leases(settings, stack)
    return store


async def open_store_and_leases(
    settings: Settings, stack: AsyncExitStack
) -> tuple[Store, Leases | None]:
    """The store, and the rooms' leases when several nodes may share it: Postgres holds both
    (one judge per wedding, gateway/ownership.py); the embedded SQLite node owns every room."""
    if settings.database_url is None:
        return await stack.enter_async_context(SqliteStore.open(settings.data_dir)), None
    store = PostgresStore.connect(
        str(settings.database_url),
        schema=settings.database_schema,
        pool_max=settings.database_pool_max,
        command_timeout=settings.database_timeout,
    )
    postgres = await stack.enter_async_context(store)
    return postgres, postgres


async def open_revocations(
    settings: Settings, stack: AsyncExitStack, supervisor: Supervisor | None = None
) -> Revocations:
    """Shared through Redis when GATEWAY_REDIS_URL is set, else kept in this process."""
    if settings.redis_url is None:
        return await stack.enter_async_context(MemoryRevocations())
    revocations = RedisRevocations.connect(
        str(settings.redis_url), prefix=settings.redis_prefix, supervisor=supervisor
    )
    return await stack.enter_async_context(revocations)


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_message_bytes=settings.max_message_bytes,
        max_awareness_entries=settings.max_awareness_entries,
        max_awareness_state_bytes=settings.max_awareness_state_bytes,
        messages_per_second=settings.messages_per_second,
        message_burst=settings.message_burst,
        bytes_per_second=settings.bytes_per_second,
        byte_burst=settings.byte_burst,
        rate_pacing_seconds=settings.rate_pacing_seconds,
        rate_window_seconds=settings.rate_window_seconds,
    )


LifespanState = dict[str, Any]
"""What the lifespan yields: ``{"node": Node, "gatekeeper": Gatekeeper}``; every request and
WebSocket reads it as ``request.state.X`` / ``scope["state"]["X"]`` (the only shared state)."""


class GatewayApp:
    """The ASGI entry point.

    WebSockets on ``/ws/`` go straight to the endpoint: Starlette's middleware would otherwise
    wrap every single send and receive of every client (measured in the load-test profile).
    Everything else, the lifespan included, goes to the Starlette app, whose error answers are
    rendered by gateway/http_errors.py.

    ``serving`` opens the node and what it needs for one run of the lifespan. The app keeps
    that node (``node``) so the server can drain it (``drain``) before closing connections.
    """

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        serving: Callable[[], AbstractAsyncContextManager[LifespanState]],
        websocket: WebSocketEndpoint,
        supervisor: Supervisor,
        mux: MuxEndpoint | None = None,
    ) -> None:
        self.websocket = websocket
        self.mux = mux
        """``/mux`` (proto/spec.md §10), dispatched directly like ``/ws/``."""
        self.supervisor = supervisor
        """The process's background tasks: ``/livez`` and the server's exit follow it."""
        self._serving = serving
        self._node: Node | None = None
        self.http = Starlette(
            routes=routes, lifespan=self._lifespan, exception_handlers=EXCEPTION_HANDLERS
        )

    @property
    def node(self) -> Node | None:
        """The node of the current (or last) lifespan; None before the first start-up."""
        return self._node

    async def drain(self) -> None:
        """Drain the running node (proto/spec.md §4.5); nothing before start-up.

        The server must call it before it closes the connections (gateway/cli.py
        GatewayServer): uvicorn closes every WebSocket before the lifespan shutdown runs.
        """
        if self._node is not None:
            await self._node.drain()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[LifespanState]:
        async with self._serving() as state:
            self._node = state["node"]
            yield state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith("/ws/"):
            scope["path_params"] = {"wedding_id": scope["path"][len("/ws/") :]}
            await self.websocket(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] == "/mux" and self.mux is not None:
            await self.mux(scope, receive, send)
        else:
            await self.http(scope, receive, send)


def create_app(
    settings: Settings, *, bus: Bus | None = None, revocations: Revocations | None = None
) -> GatewayApp:
    """Build the gateway's ASGI app; its lifespan opens the bus, the store and the node.

    ``bus`` and ``revocations`` replace what the settings choose (tests run several nodes in one
    process on one in-memory broker).
    """
    verifier = TokenVerifier.from_settings(settings)
    supervisor = Supervisor()

    @asynccontextmanager
    async def serving() -> AsyncIterator[LifespanState]:
        async with AsyncExitStack() as stack:
            if verifier is None:
                log_development_mode()
            if revocations is None:
                shared = await open_revocations(settings, stack, supervisor)
            else:
                shared = revocations
            gatekeeper = Gatekeeper(verifier, shared)
            store, leases = await open_store_and_leases(settings, stack)
            journal = open_journal(settings, stack)
            node = Node(
                node_id=NodeId(settings.node_id),
                bus=bus if bus is not None else await open_bus(settings, stack, supervisor),
                store=store,
                limits=limits_from(settings),
                room_idle_seconds=settings.room_idle_seconds,
                malloc_trim_seconds=settings.malloc_trim_seconds,
                snapshot_every=settings.snapshot_every,
                commit_batch_max=settings.commit_batch_max,
                max_pending_appends=settings.max_pending_appends,
                drain_seconds=settings.drain_seconds,
                drain_spread_seconds=settings.drain_spread_seconds,
                journal=journal,
                broadcast_batch_ms=settings.broadcast_batch_ms,
                resume_log_max_updates=settings.resume_log_max_updates,
                leases=leases,
                lease_seconds=settings.lease_seconds,
                relay=RelaySettings(
                    resend_seconds=settings.relay_resend_seconds,
                    timeout_seconds=settings.relay_timeout_seconds,
                    max_outstanding=settings.relay_max_outstanding,
                ),
                supervisor=supervisor,
                retention=retention_from(settings),
                warm=WarmSettings(
                    days=settings.warm_days,
                    max_rooms=settings.warm_max_rooms,
                    refresh_seconds=settings.warm_refresh_seconds,
                    priority_hours=settings.priority_hours,
                    priority_max_weddings=settings.priority_max_weddings,
                ),
                shed=ShedSettings(
                    pending_appends=settings.shed_pending_appends,
                    loop_lag_seconds=settings.shed_loop_lag_seconds,
                ),
            )
            await stack.enter_async_context(node)
            webhooks = await start_webhooks(settings, node, store, stack)
            changes = start_change_watcher(settings, node, store, stack)
            yield {
                "node": node,
                "gatekeeper": gatekeeper,
                "supervisor": supervisor,
                "history": history_config,
                "feed": feed_config,
                "webhooks": webhooks,
                "changes": changes,
                "mux": mux,
            }

    history_config = HistoryConfig(
        retention_seconds=settings.history_retention_seconds,
        page_max=settings.history_page_max,
        write_timeout_seconds=settings.history_write_timeout_seconds,
        undo_max_updates=settings.undo_max_updates,
    )
    feed_config = FeedConfig(
        poll_seconds=settings.changes_poll_seconds,
        keepalive_seconds=settings.sse_keepalive_seconds,
        batch_max=settings.webhook_batch_max,
    )

    websocket = WebSocketEndpoint(
        max_message_bytes=settings.max_message_bytes,
        client_queue_limit=settings.client_queue_limit,
        client_outbox_bytes=settings.client_outbox_bytes,
        client_drain_timeout=settings.client_drain_timeout,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
    )
    mux = mux_endpoint(settings)
    routes = [
        WebSocketRoute("/ws/{wedding_id}", websocket),
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/v1/revocations", revoke_token, methods=["POST"]),
        Route("/v1/weddings/{wedding_id}", wedding_view_or_past, methods=["GET"]),
        Route("/v1/weddings/{wedding_id}/resume", wedding_resume, methods=["GET"]),
        Route("/v1/weddings/{wedding_id}/versions", versions, methods=["GET"]),
        Route("/v1/weddings/{wedding_id}/changes", changes, methods=["GET"]),
        Route("/v1/weddings/{wedding_id}/restore", restore, methods=["POST"]),
        Route("/v1/weddings/{wedding_id}/undo", undo, methods=["POST"]),
        Route("/v1/weddings/{wedding_id}/core", patch_core, methods=["PATCH"]),
        Route("/v1/changes/stream", change_stream, methods=["GET"]),
        Route("/v1/vendor/weddings", vendor_weddings, methods=["GET"]),
        Route("/v1/webhooks", list_webhooks, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}", put_webhook, methods=["PUT"]),
        Route("/v1/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
        Route("/v1/weddings/{wedding_id}/reset", reset_history, methods=["POST"]),
        Route("/v1/weddings/{wedding_id}/owner", wedding_owner, methods=["GET"]),
        *ops_routes(),  # the ops page (admin token; open in development mode)
        *demo_routes(settings),  # development mode only
    ]
    return GatewayApp(routes, serving, websocket, supervisor, mux)


def mux_endpoint(settings: Settings) -> MuxEndpoint:
    """``/mux``: many weddings over one socket, with the GATEWAY_MUX_* bounds."""
    limits = MuxLimits(
        max_documents=settings.mux_max_documents,
        messages_per_second=settings.mux_messages_per_second,
        message_burst=settings.mux_message_burst,
        bytes_per_second=settings.mux_bytes_per_second,
        byte_burst=settings.mux_byte_burst,
        rate_pacing_seconds=settings.rate_pacing_seconds,
        rate_window_seconds=settings.rate_window_seconds,
        outbox_messages=settings.mux_outbox_messages,
        outbox_bytes=settings.mux_outbox_bytes,
        document_queue=settings.mux_document_queue,
        ping_seconds=settings.mux_ping_seconds,
    )
    return MuxEndpoint(
        max_message_bytes=settings.max_message_bytes,
        limits=limits,
        client_drain_timeout=settings.client_drain_timeout,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
    )


def retention_from(settings: Settings) -> Retention | None:
    """What compaction keeps for version history; None when it is off (retention 0)."""
    if settings.history_retention_seconds <= 0:
        return None
    return Retention(settings.history_retention_seconds, settings.history_checkpoint_seconds)


async def start_webhooks(
    settings: Settings, node: Node, store: Store, stack: AsyncExitStack
) -> WebhookDispatcher | None:
    """The webhook dispatcher as a supervised job of the node (gateway/webhooks.py)."""
    if not all(isinstance(store, port) for port in (Versions, Webhooks, Cursors)):
        return None
    client = await stack.enter_async_context(httpx.AsyncClient())
    dispatcher = WebhookDispatcher(
        store,
        node.node_id,
        WebhookSettings(
            urls=settings.webhook_url_list,
            secret=str(settings.webhook_secret) if settings.webhook_secret else None,
            timeout_seconds=settings.webhook_timeout_seconds,
            batch_max=settings.webhook_batch_max,
            dead_letter_seconds=settings.webhook_dead_letter_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            poll_seconds=settings.changes_poll_seconds,
            claim_seconds=settings.webhook_claim_seconds,
        ),
        client,
    )
    node.webhooks = dispatcher
    task = node.spawn("webhooks", node.supervisor.keep("webhooks", dispatcher.run, essential=False))
    stack.callback(task.cancel)
    return dispatcher


def start_change_watcher(
    settings: Settings, node: Node, store: Store, stack: AsyncExitStack
) -> ChangeWatcher | None:
    """The poller behind every change stream of the node (gateway/change_feed.py)."""
    if not isinstance(store, Versions):
        return None
    watcher = ChangeWatcher(store, settings.changes_poll_seconds, node.rooms.stopping)
    task = node.spawn("changes", node.supervisor.keep("changes", watcher.run, essential=False))
    stack.callback(task.cancel)
    return watcher


def open_journal(settings: Settings, stack: AsyncExitStack) -> CrashJournal:
    """The crash journal in the data directory, closed with the stack."""
    journal = CrashJournal.open(settings.data_dir)
    stack.callback(journal.close)
    return journal


async def livez(request: Request) -> Response:
    """Alive unless a background task the process needs is beyond repair (then the server
    drains and exits non-zero; a probe restarts it if it cannot)."""
    supervisor: Supervisor = request.state.supervisor
    if supervisor.failed is not None:
        return JSONResponse({"status": "failed", "reason": supervisor.failed}, status_code=503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the node accepts clients, its store commits and its bus is connected."""
    node: Node = request.state.node
    checks = node.readiness()
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "unready",
        "node": node.node_id,
        "checks": checks,
        "degraded": node.degraded(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    body = metrics.render(request.state.node, request.state.mux)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
