"""HTTP endpoints of version history, restore, undo, the change feed and JSON writes (issue 17).

Specified in proto/spec.md §9 (requests, answers, errors); in short:

``GET /v1/weddings/{id}/versions?before=OFFSET&limit=N``
    Points of the history, newest first: ``{"offset", "at", "subject", "role", "via", "fields"}``
    each; ``next`` holds the ``before`` of the next page (null on the last).
``GET /v1/weddings/{id}?at=ISO8601`` / ``?offset=N``
    The JSON view as it was then (without either: the current view, gateway/http_api.py).
``GET /v1/weddings/{id}/changes?after=OFFSET&limit=N``
    Field-level changes after an offset, in order (gateway/history.py ``changes_after``).
``POST /v1/weddings/{id}/restore`` ``{"at": ISO8601}`` or ``{"offset": N}``
    The wedding goes back to that state through a new update (gateway/history_write.py).
``POST /v1/weddings/{id}/undo`` ``{"subject": S, "since": ISO8601}`` or ``"since_offset": N``
    The fields subject S changed last since then go back; everyone else's later edits stay.
``PATCH /v1/weddings/{id}/core`` ``{"venue": "...", "notes": null, ...}``
    Core fields set (null: removed) by an update the gateway makes for the token's subject.

Every role that may read a wedding may read its history; restore and undo need a planner or
couple token for the wedding, or an admin token (which restores with planner rights); PATCH
needs a role that may write core fields (vendor and viewer get 422, nothing stored).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from pycrdt import Map
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from gateway import history, history_write
from gateway.admin import admin_claims
from gateway.core import schema
from gateway.core.policy import DEVELOPMENT_GRANT, Grant, Role
from gateway.errors import BackendUnavailable, Forbidden, GatewayError, ProtocolError
from gateway.gatekeeper import Gatekeeper
from gateway.http_api import authorize, wedding_view
from gateway.http_errors import HttpError
from gateway.node import Node
from gateway.ports import AuditEntry, Versions
from gateway.types import RoomId, parse_room_id

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 << 10
"""Largest JSON body of a restore, undo or PATCH (the whole core is far smaller)."""
RESTORERS = frozenset({Role.PLANNER, Role.COUPLE})


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """The settings these endpoints read (from gateway/settings.py, via the lifespan)."""

    retention_seconds: float
    page_max: int
    write_timeout_seconds: float
    undo_max_updates: int


# -- reading --------------------------------------------------------------------------------------


async def wedding_view_or_past(request: Request) -> Response:
    """``GET /v1/weddings/{id}``: the current view, or with ``at`` / ``offset`` a past one."""
    params = request.query_params
    if "at" not in params and "offset" not in params:
        return await wedding_view(request)
    _only(params, {"at", "offset", "token"})
    if "at" in params and "offset" in params:
        raise HttpError(400, "give at or offset, not both")
    room = authorize(request)
    store, config = _versions(request), _config(request)
    offset = await _target_offset(store, config, room, params.get("at"), params.get("offset"))
    past, view = await history.state_at(store, room, offset) if offset else (None, _EMPTY)
    body = {
        "wedding_id": room,
        "epoch": past.epoch if past else 1,
        "offset": offset,
        **view,
    }
    return _json(body)


async def versions(request: Request) -> Response:
    """``GET /v1/weddings/{id}/versions``: audit entries, newest first, a page at a time."""
    params = request.query_params
    _only(params, {"before", "limit", "token"})
    room = authorize(request)
    store, config = _versions(request), _config(request)
    before = _int_param(params, "before", None, low=1)
    limit = _int_param(params, "limit", 50, low=1, high=config.page_max)
    assert limit is not None
    entries = await store.audit_range(room, before=before, limit=limit, newest_first=True)
    more = len(entries) == limit and entries[-1].offset > 1
    body = {
        "wedding_id": room,
        "versions": [_entry_json(e) | {"fields": list(e.fields)} for e in entries],
        "next": {"before": entries[-1].offset} if more else None,
    }
    return _json(body)


async def changes(request: Request) -> Response:
    """``GET /v1/weddings/{id}/changes``: field-level changes after an offset, in order."""
    params = request.query_params
    _only(params, {"after", "limit", "token"})
    room = authorize(request)
    store, config = _versions(request), _config(request)
    after = _int_param(params, "after", 0, low=0)
    limit = _int_param(params, "limit", 100, low=1, high=config.page_max)
    assert after is not None
    assert limit is not None
    try:
        sets = await history.changes_after(store, room, after, limit)
    except history.HistoryGone as exc:
        raise HttpError(410, str(exc)) from None
    body = {
        "wedding_id": room,
        "changes": [change_set_json(s) for s in sets],
        "next_after": sets[-1].entry.offset if sets else after,
    }
    return _json(body)


def change_set_json(change_set: history.ChangeSet) -> dict[str, Any]:
    """One change set as the feed, the stream and the webhooks send it."""
    return _entry_json(change_set.entry) | {
        "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in change_set.changes]
    }


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "offset": entry.offset,
        "at": history.iso_time(entry.at),
        "subject": entry.subject,
        "role": entry.role,
        "via": entry.via,
    }


# -- writing --------------------------------------------------------------------------------------


async def restore(request: Request) -> Response:
    """``POST /v1/weddings/{id}/restore``: back to the state at ``at`` or ``offset``."""
    room, grant = _restorer(request, "restore")
    body = _object(await _body(request), {"at", "offset"})
    if ("at" in body) == ("offset" in body):
        raise HttpError(400, 'give exactly one of "at" (ISO 8601) or "offset" (integer)')
    at, offset = body.get("at"), body.get("offset")
    if at is not None and not isinstance(at, str):
        raise HttpError(400, '"at" must be an ISO 8601 time string')
    store, config = _versions(request), _config(request)
    raw_offset = None if offset is None else _json_int(offset, "offset")
    target = await _target_offset(store, config, room, at, raw_offset)
    _, view = await history.state_at(store, room, target) if target else (None, _EMPTY)
    written = await _write(request, room, grant, lambda doc: history.restore_to(doc, view))
    log.info("wedding_restored", room=room, offset=target, by=grant.subject)
    return _written(room, written, {"restored_to": target})


async def undo(request: Request) -> Response:
    """``POST /v1/weddings/{id}/undo``: revert what ``subject`` changed last since a time."""
    room, grant = _restorer(request, "undo")
    body = _object(await _body(request), {"subject", "since", "since_offset"})
    subject = body.get("subject")
    if not isinstance(subject, str) or not subject:
        raise HttpError(400, '"subject" must be a non-empty string')
    if ("since" in body) == ("since_offset" in body):
        raise HttpError(400, 'give exactly one of "since" (ISO 8601) or "since_offset" (integer)')
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise HttpError(400, '"since" must be an ISO 8601 time string')
    store, config = _versions(request), _config(request)
    raw = None if "since_offset" not in body else _json_int(body["since_offset"], "since_offset")
    start = await _target_offset(store, config, room, since, raw)
    try:
        sets = await history.changes_after(store, room, start, config.undo_max_updates + 1)
    except history.HistoryGone as exc:
        raise HttpError(410, str(exc)) from None
    if len(sets) > config.undo_max_updates:
        raise HttpError(
            422,
            f"more than {config.undo_max_updates} updates since then"
            " (GATEWAY_UNDO_MAX_UPDATES): restore a point in time instead",
        )
    reverts = history.reverts_for(subject, sets)
    written = await _write(request, room, grant, lambda doc: history.undo_changes(doc, reverts))
    log.info("subject_undone", room=room, subject=subject, since=start, by=grant.subject)
    fields = [revert.field for revert in reverts]
    return _written(room, written, {"since_offset": start, "reverted": fields})


async def patch_core(request: Request) -> Response:
    """``PATCH /v1/weddings/{id}/core``: set core fields from JSON (null removes one)."""
    room = authorize(request)
    gatekeeper: Gatekeeper = request.state.gatekeeper
    grant = gatekeeper.grant(gatekeeper.token_in(request.scope), room)
    body = _object(await _body(request), set(schema.CORE))
    if not body:
        raise HttpError(400, "the body names no field: send at least one core field")
    if not grant.rights.core:
        field = f"core.{sorted(body)[0]}"
        reason = f"role {grant.role} may not write core fields"
        raise HttpError(422, f"{field}: {reason}", details={"field": field, "reason": reason})
    for key, value in body.items():
        problem = _core_reason(key, value)
        if problem is not None:
            reason = problem
            field = f"core.{key}"
            raise HttpError(422, f"{field} {reason}", details={"field": field, "reason": reason})
    patcher = Grant(
        grant.subject, grant.role, grant.vendor_id, grant.token_id, grant.expires_at, via="patch"
    )

    def edit(doc: Any) -> None:
        with doc.transaction():
            core = doc.get("core", type=Map)
            for key, value in body.items():
                if value is None:
                    if key in core:
                        del core[key]
                else:
                    core[key] = value

    written = await _write(request, room, patcher, edit, render=history.view_of)
    extra = {"core": written.view["core"]} if written.view is not None else {}
    return _written(room, written, extra)


def _core_reason(key: str, value: object) -> str | None:
    if value is None:
        return "is required and cannot be removed" if schema.CORE[key].required else None
    return schema.check_field(schema.CORE, key, value)


async def _write(
    request: Request, room: RoomId, grant: Grant, edit: history_write.Edit, render: Any = None
) -> history_write.Written:
    node: Node = request.state.node
    config = _config(request)
    try:
        return await history_write.write(
            node, room, grant, edit, timeout=config.write_timeout_seconds, render=render
        )
    except BackendUnavailable:
        raise  # 503 with Retry-After (gateway/http_errors.py)
    except ProtocolError as exc:  # the update broke a limit of proto/spec.md §5 (its size)
        reason = f"the gateway's update was refused: {exc}"
        raise HttpError(422, reason, details={"field": "document", "reason": reason}) from exc
    except GatewayError as exc:  # the room went (a reset, a lost lease, a drain): try again
        raise HttpError(503, f"the write was not made: {exc}", {"Retry-After": "1"}) from exc


def _written(room: RoomId, written: history_write.Written, extra: dict[str, Any]) -> Response:
    """200 once durable; 422 (with the first refused field and reason) when refused."""
    rejected = [{"field": r.field, "reason": r.reason} for r in written.rejects]
    if rejected:
        first = rejected[0]
        raise HttpError(
            422,
            f"{first['field']}: {first['reason']}",
            details={**first, "rejected": rejected},
        )
    return _json({"wedding_id": room, "changed": written.changed, "durable": True, **extra})


def _restorer(request: Request, via: str) -> tuple[RoomId, Grant]:
    """The wedding and the grant a restore or undo is made with (module docstring)."""
    room = parse_room_id(request.path_params["wedding_id"])
    if room is None:
        raise HttpError(404, "no such wedding: an id is 1-64 of A-Z a-z 0-9 _ -")
    gatekeeper: Gatekeeper = request.state.gatekeeper
    if gatekeeper.development:
        grant = DEVELOPMENT_GRANT
    else:
        token = gatekeeper.token_in(request.scope)
        claims = (
            gatekeeper.claims(token) if token is not None else admin_claims(request, gatekeeper)
        )
        if claims.admin:  # an admin restores with planner rights, whatever its own role
            grant = Grant(claims.subject, Role.PLANNER, token_id=claims.token_id)
        else:
            grant = claims.grant_for(room)
            if grant.role not in RESTORERS and not claims.admin:
                raise Forbidden(f"role {grant.role} may not {via}: a planner or couple may")
    return room, Grant(
        grant.subject, grant.role, grant.vendor_id, grant.token_id, grant.expires_at, via=via
    )


# -- parsing --------------------------------------------------------------------------------------


_EMPTY: history.View = {"core": {}, "timeline": []}


async def _target_offset(
    store: Versions,
    config: HistoryConfig,
    room: RoomId,
    at: str | None,
    offset: str | int | None,
) -> int:
    """The offset named by ``at`` or ``offset``, checked against the history window."""
    if config.retention_seconds <= 0:
        raise HttpError(410, "version history is off (GATEWAY_HISTORY_RETENTION_SECONDS = 0)")
    window_start = time.time() - config.retention_seconds
    if at is not None:
        moment = parse_time(at)
        if moment > time.time():
            raise HttpError(400, f"at {at} is in the future")
        if moment < window_start:
            raise HttpError(410, _before_window(at, window_start))
        return await store.offset_at(room, moment)
    assert offset is not None
    number = offset if isinstance(offset, int) else _parse_int(offset, "offset", low=0)
    if number < 0:
        raise HttpError(400, "offset must be 0 or more")
    if number == 0:
        return 0
    entries = await store.audit_range(room, after=number - 1, before=number + 1, limit=1)
    if not entries:
        raise HttpError(404, f"wedding {room} has no offset {number}")
    if entries[0].at < window_start:
        raise HttpError(410, _before_window(f"offset {number}", window_start))
    return number


def _before_window(what: str, start: float) -> str:
    return (
        f"{what} is before the history window (GATEWAY_HISTORY_RETENTION_SECONDS):"
        f" the earliest time kept is {history.iso_time(start)}"
    )


def parse_time(text: str) -> float:
    """An ISO 8601 time with a zone (``2026-06-01T14:00:00Z``) as Unix seconds; else 400."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HttpError(400, f"{text!r} is not an ISO 8601 time (2026-06-01T14:00:00Z)") from None
    if moment.tzinfo is None:
        raise HttpError(400, f"{text!r} has no time zone: add Z or +HH:MM")
    return moment.astimezone(UTC).timestamp()


def _only(params: QueryParams, known: set[str]) -> None:
    unknown = sorted(set(params.keys()) - known)
    if unknown:
        raise HttpError(400, f"unknown parameter {unknown[0]!r}: expected {sorted(known)}")
    repeated = [key for key in params if len(params.getlist(key)) > 1]
    if repeated:
        raise HttpError(400, f"{repeated[0]} is given more than once")


def _int_param(
    params: QueryParams, name: str, default: int | None, *, low: int, high: int | None = None
) -> int | None:
    raw = params.get(name)
    return default if raw is None else _parse_int(raw, name, low=low, high=high)


def _parse_int(raw: str, name: str, *, low: int, high: int | None = None) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise HttpError(400, f"{name} must be a whole number, not {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HttpError(400, f"{name} must be {bound}, not {value}")
    return value


def _json_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise HttpError(400, f'"{name}" must be an integer')
    return value


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _object(body: bytes, known: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``known`` keys; 400 otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise HttpError(400, f"unknown field {unknown[0]!r}: expected one of {sorted(known)}")
    return data


def _versions(request: Request) -> Versions:
    store = request.state.node.store
    if not isinstance(store, Versions):
        raise HttpError(501, "this store keeps no version history")
    return store


def _config(request: Request) -> HistoryConfig:
    config: HistoryConfig = request.state.history
    return config


def _json(body: dict[str, Any]) -> Response:
    headers = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
    return Response(orjson.dumps(body), 200, headers, "application/json")
