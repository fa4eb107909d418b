"""Webhooks: every change batch of every wedding, POSTed signed to each registered endpoint.

Endpoints come from configuration (``GATEWAY_WEBHOOK_URLS``, signed with
``GATEWAY_WEBHOOK_SECRET``; registered in the store at start-up under the id ``config-<digest of
the url>``) or the admin API (``PUT /v1/webhooks/{id}``, ``GET /v1/webhooks``, ``DELETE
/v1/webhooks/{id}``). The store keeps them, and for each endpoint and wedding a cursor: the
last offset the endpoint acknowledged.

Delivery (``WebhookDispatcher``, one task per endpoint on the node that holds its claim in the
store, so one node delivers to an endpoint at a time):

- **A batch** is the change sets of one wedding after its cursor, at most
  ``GATEWAY_WEBHOOK_BATCH_MAX``: ``{"endpoint", "wedding_id", "from_offset", "to_offset",
  "changes": [...]}`` (the change feed's objects, gateway/history_api.py).
- **Signed**: ``X-Wedsync-Timestamp`` (Unix seconds), ``X-Wedsync-Delivery`` (``<wedding>:
  <from>-<to>``: the same batch keeps its id across retries) and ``X-Wedsync-Signature:
  v1=<hex>``, HMAC-SHA256 with the endpoint's secret over ``<timestamp>.<body>``. A receiver
  checks it with ``verify_signature``: a wrong signature, or a timestamp older than its
  tolerance (replay), is refused.
- **At least once, in order per wedding**: the cursor moves only after a 2xx answer, and a
  wedding's next batch is sent only after its previous one was acknowledged. A receiver may see
  a batch again (its 2xx was lost, or the delivering node died before recording the cursor):
  the same ``X-Wedsync-Delivery`` and offsets; it skips offsets it has processed.
- **Retries** with jittered exponential backoff (tenacity; up to
  ``GATEWAY_WEBHOOK_RETRY_MAX_SECONDS`` between tries), every answer but 2xx and every
  connection failure or timeout (``GATEWAY_WEBHOOK_TIMEOUT_SECONDS``) counting as a failure.
- **Dead letter**: an endpoint that failed for ``GATEWAY_WEBHOOK_DEAD_LETTER_SECONDS`` without
  a success is marked dead in the store (``gateway_webhook_dead`` is 1 for it in /metrics)
  and gets nothing until an admin registers it again (its cursors are kept: delivery resumes
  where it stopped).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from gateway import history
from gateway.admin import admin_claims
from gateway.errors import BackendUnavailable, Forbidden
from gateway.gatekeeper import Gatekeeper
from gateway.history_api import change_set_json
from gateway.http_errors import HttpError
from gateway.ports import Cursors, Versions, WebhookEndpoint, Webhooks
from gateway.types import NodeId, RoomId, parse_room_id

log = structlog.get_logger(__name__)

SIGNATURE_VERSION = "v1"
CLOCK_SLACK_SECONDS = 5.0
"""How far back each scan for changed weddings looks before the previous one (a commit's time
is taken before it becomes visible)."""
MAX_SECRET_CHARS = 512
MAX_URL_CHARS = 2048


# -- signatures -----------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={digest.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signed: str,
    *,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature is ours over this body and timestamp, and the
    timestamp is within ``tolerance_seconds`` of ``now`` (an older one is a replay)."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signed)


# -- delivery -------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One POST of a batch was not acknowledged with a 2xx."""


class ClaimLost(Exception):
    """Another node took the endpoint's delivery over (this one stalled past its claim)."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: str | None = None
    timeout_seconds: float = 10.0
    batch_max: int = 100
    dead_letter_seconds: float = 3600.0
    retry_max_seconds: float = 60.0
    poll_seconds: float = 1.0
    claim_seconds: float = 30.0


@dataclass(slots=True)
class EndpointStatistics:
    delivered_batches: int = 0
    failed_attempts: int = 0
    dead: bool = False


@dataclass(slots=True)
class WebhookStatistics:
    endpoints: dict[str, EndpointStatistics] = field(default_factory=dict)


class WebhookDispatcher:
    """Delivers change batches to every endpoint this node holds the claim of (module doc)."""

    def __init__(
        self, store: Any, node_id: NodeId, settings: WebhookSettings, client: httpx.AsyncClient
    ) -> None:
        if not all(isinstance(store, port) for port in (Versions, Webhooks, Cursors)):
            raise TypeError("webhooks need a store with Versions, Webhooks and Cursors")
        self.store = store
        self.node_id = node_id
        self.settings = settings
        self.client = client
        self.stats = WebhookStatistics()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def register_configured(self) -> None:
        """Register the endpoints of the configuration (an existing one keeps its cursors)."""
        known = {e.id: e for e in await self.store.endpoints()}
        for url in self.settings.urls:
            if self.settings.secret is None:
                raise ValueError("GATEWAY_WEBHOOK_URLS needs GATEWAY_WEBHOOK_SECRET")
            endpoint_id = configured_id(url)
            old = known.get(endpoint_id)
            if old is None or old.url != url or old.secret != self.settings.secret:
                await self.store.register(
                    WebhookEndpoint(endpoint_id, url, self.settings.secret, time.time())
                )

    async def run(self) -> None:
        """Start a delivery task for each live endpoint, stop those removed; forever."""
        await self.register_configured()
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    await self._reconcile(tasks)
                    await asyncio.sleep(self.settings.poll_seconds)  # a poll interval
        finally:
            for task in self._tasks.values():
                task.cancel()

    async def _reconcile(self, tasks: asyncio.TaskGroup) -> None:
        try:
            endpoints = {e.id: e for e in await self.store.endpoints()}
        except BackendUnavailable as exc:
            log.warning("webhook_endpoints_unreadable", error=str(exc))
            return
        for endpoint_id, task in list(self._tasks.items()):
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None or endpoint.dead_since is not None or task.done():
                task.cancel()
                del self._tasks[endpoint_id]
        for endpoint in endpoints.values():
            stats = self.stats.endpoints.setdefault(endpoint.id, EndpointStatistics())
            stats.dead = endpoint.dead_since is not None
            if endpoint.dead_since is None and endpoint.id not in self._tasks:
                self._tasks[endpoint.id] = tasks.create_task(self._serve(endpoint))
        for gone in set(self.stats.endpoints) - endpoints.keys():
            del self.stats.endpoints[gone]

    async def _serve(self, endpoint: WebhookEndpoint) -> None:
        """Deliver to one endpoint while this node holds its claim."""
        since = endpoint.created_at
        while True:
            try:
                if await self.store.claim(endpoint.id, self.node_id, self.settings.claim_seconds):
                    started = time.time()
                    if not await self._deliver_changed(endpoint, since - CLOCK_SLACK_SECONDS):
                        return  # dead
                    since = started
            except ClaimLost:
                log.info("webhook_claim_lost", endpoint=endpoint.id)
            except BackendUnavailable as exc:
                log.warning("webhook_store_unavailable", endpoint=endpoint.id, error=str(exc))
            await asyncio.sleep(self.settings.poll_seconds)  # a poll interval

    async def _deliver_changed(self, endpoint: WebhookEndpoint, since: float) -> bool:
        """Deliver every wedding changed since ``since``; False once the endpoint is dead."""
        changed = await self.store.rooms_changed_since(since)
        if not changed:
            return True
        cursors = await self.store.cursors(endpoint.id)
        for room in sorted(changed):
            cursor = cursors.get(room)
            if cursor is None:
                cursor = await self.store.offset_at(room, endpoint.created_at)
            if not await self._deliver_room(endpoint, room, cursor):
                return False
        return True

    async def _deliver_room(self, endpoint: WebhookEndpoint, room: RoomId, cursor: int) -> bool:
        while True:
            try:
                sets = await history.changes_after(
                    self.store, room, cursor, self.settings.batch_max
                )
            except history.HistoryGone as exc:
                log.warning("webhook_history_gone", endpoint=endpoint.id, room=room, error=str(exc))
                await self.store.mark_dead(endpoint.id)
                return False
            if not sets:
                return True
            last = sets[-1].entry.offset
            body = orjson.dumps(
                {
                    "endpoint": endpoint.id,
                    "wedding_id": room,
                    "from_offset": sets[0].entry.offset,
                    "to_offset": last,
                    "changes": [change_set_json(s) for s in sets],
                }
            )
            delivery = f"{room}:{sets[0].entry.offset}-{last}"
            if not await self._post_with_retry(endpoint, body, delivery):
                return False
            await self.store.advance(endpoint.id, room, last)
            self.stats.endpoints.setdefault(
                endpoint.id, EndpointStatistics()
            ).delivered_batches += 1
            cursor = last
            if len(sets) < self.settings.batch_max:
                return True

    async def _post_with_retry(self, endpoint: WebhookEndpoint, body: bytes, delivery: str) -> bool:
        """POST until a 2xx; False (the endpoint is marked dead) after the dead-letter time."""
        settings = self.settings
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DeliveryFailed),
            wait=wait_exponential_jitter(
                multiplier=0.1,
                max=settings.retry_max_seconds,
                jitter=settings.retry_max_seconds / 4,
            ),
            stop=stop_after_delay(settings.dead_letter_seconds),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(endpoint, body, delivery)
        except RetryError:
            await self.store.mark_dead(endpoint.id)
            stats = self.stats.endpoints.setdefault(endpoint.id, EndpointStatistics())
            stats.dead = True
            log.error("webhook_dead", endpoint=endpoint.id, delivery=delivery)
            return False
        return True

    async def _post(self, endpoint: WebhookEndpoint, body: bytes, delivery: str) -> None:
        # each try renews the claim: no other node delivers meanwhile (in order per wedding)
        if not await self.store.claim(endpoint.id, self.node_id, self.settings.claim_seconds):
            raise ClaimLost(endpoint.id)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Wedsync-Timestamp": timestamp,
            "X-Wedsync-Delivery": delivery,
            "X-Wedsync-Signature": signature(endpoint.secret, timestamp, body),
        }
        try:
            answer = await self.client.post(
                endpoint.url, content=body, headers=headers, timeout=self.settings.timeout_seconds
            )
        except httpx.HTTPError as exc:
            self._failed(endpoint, delivery, repr(exc))
            raise DeliveryFailed(repr(exc)) from exc
        if not 200 <= answer.status_code < 300:
            self._failed(endpoint, delivery, f"HTTP {answer.status_code}")
            raise DeliveryFailed(f"HTTP {answer.status_code}")

    def _failed(self, endpoint: WebhookEndpoint, delivery: str, error: str) -> None:
        self.stats.endpoints.setdefault(endpoint.id, EndpointStatistics()).failed_attempts += 1
        log.info("webhook_attempt_failed", endpoint=endpoint.id, delivery=delivery, error=error)


def configured_id(url: str) -> str:
    return "config-" + hashlib.sha256(url.encode()).hexdigest()[:12]


# -- the admin API --------------------------------------------------------------------------------


def _registry(request: Request) -> Webhooks:
    gatekeeper: Gatekeeper = request.state.gatekeeper
    if gatekeeper.development:
        raise Forbidden("no keys configured: development mode cannot authorise webhooks")
    admin_claims(request, gatekeeper)
    store = request.state.node.store
    if not isinstance(store, Webhooks):
        raise HttpError(501, "this store keeps no webhooks")
    return store


async def put_webhook(request: Request) -> Response:
    """``PUT /v1/webhooks/{id}`` ``{"url": "https://...", "secret": "..."}``: register (or
    replace, clearing a dead letter) an endpoint. 200 ``{"id", "url"}``."""
    store = _registry(request)
    endpoint_id = request.path_params["webhook_id"]
    if parse_room_id(endpoint_id) is None:
        raise HttpError(404, "a webhook id is 1-64 of A-Z a-z 0-9 _ -")
    body = await request.body()
    if len(body) > 8 << 10:
        raise HttpError(413, "the body is larger than 8192 bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(400, 'the body must be JSON: {"url": string, "secret": string}') from None
    if not isinstance(data, dict):
        raise HttpError(400, 'the body must be a JSON object: {"url", "secret"}')
    unknown = sorted(set(data) - {"url", "secret"})
    if unknown:
        raise HttpError(400, f"unknown field {unknown[0]!r}: expected url, secret")
    url, secret = data.get("url"), data.get("secret")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise HttpError(400, '"url" must be an http:// or https:// URL')
    if len(url) > MAX_URL_CHARS:
        raise HttpError(400, f'"url" is longer than {MAX_URL_CHARS} characters')
    if not isinstance(secret, str) or not 16 <= len(secret) <= MAX_SECRET_CHARS:
        raise HttpError(400, f'"secret" must be a string of 16-{MAX_SECRET_CHARS} characters')
    await store.register(WebhookEndpoint(endpoint_id, url, secret, time.time()))
    return JSONResponse({"id": endpoint_id, "url": url})


async def list_webhooks(request: Request) -> Response:
    """``GET /v1/webhooks``: every endpoint (secrets left out) and whether it is dead."""
    store = _registry(request)
    endpoints: Sequence[WebhookEndpoint] = await store.endpoints()
    body = [{"id": e.id, "url": e.url, "dead": e.dead_since is not None} for e in endpoints]
    return JSONResponse({"webhooks": body})


async def delete_webhook(request: Request) -> Response:
    """``DELETE /v1/webhooks/{id}``: drop it and its cursors; 404 when there is none."""
    store = _registry(request)
    if not await store.remove(request.path_params["webhook_id"]):
        raise HttpError(404, "no such webhook")
    return Response(status_code=204)
