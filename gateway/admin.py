"""The admin endpoints: ``POST /v1/revocations`` (revoke a token on every node), ``POST
/v1/weddings/{id}/reset`` (a new epoch) and ``GET /v1/weddings/{id}/owner`` (which node judges
it), each authorised by an admin token.

The token comes from ``Authorization: Bearer`` only and is verified by the gatekeeper
(``Gatekeeper.claims``: signature, claims, revocation); refusals are raised and rendered as JSON
by gateway/http_errors.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import Claims
from gateway.errors import Forbidden
from gateway.gatekeeper import Gatekeeper
from gateway.http_errors import HttpError
from gateway.node import Node
from gateway.tokens import NoToken
from gateway.types import parse_room_id

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 4 << 10
MAX_JTI_CHARS = 256


async def revoke_token(request: Request) -> Response:
    """Revoke the token whose ``jti`` the JSON body names: ``{"jti": str, "expires_at": number}``.

    ``expires_at`` is the revoked token's ``exp`` (Unix seconds): the revocation is kept until
    then. The caller authenticates with ``Authorization: Bearer <token>``, a token whose
    ``admin`` claim is true. Answers, each with a JSON body:

    - 200 ``{"jti", "expires_at"}``: recorded and sent to every node, which closes the
      connections using that token. Idempotent. Unknown token ids are revoked all the same:
      the gateway never sees the tokens it does not verify, so there is no 404.
    - 400: the body is not JSON, or ``jti`` / ``expires_at`` is missing or of the wrong type.
    - 401 (with ``WWW-Authenticate: Bearer``; ``error="invalid_token"`` when a token was
      given): no bearer token, or it does not verify, or it is revoked itself.
    - 403: the token is not an admin token, or no keys are configured (development mode: no
      token can be checked, so none may revoke).
    - 413: the body is larger than 4 KiB.
    - 503 (with ``Retry-After``): the revocation could not be recorded (Redis unreachable).
    """
    gatekeeper: Gatekeeper = request.state.gatekeeper
    if gatekeeper.development:
        raise Forbidden("no keys configured: development mode cannot authorise revocations")
    claims = admin_claims(request, gatekeeper)
    body = await _read_body(request)
    if body is None:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    parsed = _parse_body(body)
    if isinstance(parsed, str):
        raise HttpError(400, parsed)
    jti, expires_at = parsed
    await gatekeeper.revocations.revoke(jti, expires_at)  # BackendUnavailable: 503
    log.info("token_revoked", jti=jti, expires_at=expires_at, by=claims.subject)
    return JSONResponse({"jti": jti, "expires_at": expires_at})


def admin_claims(request: Request, gatekeeper: Gatekeeper) -> Claims:
    """The verified claims of the request's admin token; raises Unauthorized or Forbidden.

    Admin tokens come from ``Authorization: Bearer`` only (never from a URL, which gets logged).
    """
    token = gatekeeper.token_in(request.scope, query=False)
    if token is None:
        raise NoToken("an Authorization: Bearer <token> header is required")
    claims = gatekeeper.claims(token)
    if not claims.admin:
        raise Forbidden(f"the token of {claims.subject!r} is not an admin token")
    return claims


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it exceeds MAX_BODY_BYTES (the rest is not read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return body


def _parse_body(body: bytes) -> tuple[str, float] | str:
    """``(jti, expires_at)``, or why the body is refused."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return 'the body must be JSON: {"jti": string, "expires_at": number}'
    if not isinstance(data, dict):
        return 'the body must be a JSON object: {"jti": string, "expires_at": number}'
    jti, expires_at = data.get("jti"), data.get("expires_at")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        return f"jti must be a non-empty string of at most {MAX_JTI_CHARS} characters"
    problem = "expires_at must be the token's exp: a positive number of Unix seconds"
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
        return problem
    try:
        seconds = float(expires_at)
    except OverflowError:  # an int beyond any float
        return problem
    return (jti, seconds) if math.isfinite(seconds) and seconds > 0 else problem


async def reset_history(request: Request) -> Response:
    """``POST /v1/weddings/{wedding_id}/reset``: start a new epoch of the wedding's history.

    The stored document is dropped (its audit rows stay); every node drops the room and closes
    its members (4003); a client that resumes with the old epoch is told to drop its document
    (proto/spec.md §4.6), so stale content never comes back. Authorised by an admin token (401,
    403 as for revocations); in development mode (no keys) anyone may, as every connection may
    write everything there. Answers 200 ``{"wedding_id", "epoch"}``, 404 for an invalid id,
    503 when the store is unavailable.
    """
    room = parse_room_id(request.path_params["wedding_id"])
    if room is None:
        raise HttpError(404, "no such wedding id")
    gatekeeper: Gatekeeper = request.state.gatekeeper
    by = "development mode"
    if not gatekeeper.development:
        by = admin_claims(request, gatekeeper).subject
    node: Node = request.state.node
    epoch = await node.reset_history(room)  # BackendUnavailable: 503
    log.warning("history_reset_requested", room=room, epoch=epoch, by=by)
    return JSONResponse({"wedding_id": room, "epoch": epoch})


async def wedding_owner(request: Request) -> Response:
    """``GET /v1/weddings/{wedding_id}/owner``: which node judges the wedding (DESIGN.md §2).

    Answers 200 ``{"wedding_id", "owner", "fence", "node"}``: ``owner`` is the node holding the
    wedding's lease (null when nobody does: no node has it loaded, or its owner died and the
    lease expired), ``fence`` its fencing token, ``node`` the node answering. Authorised as
    ``reset`` (an admin token; anyone in development mode); 404 for an invalid id, 503 when the
    store is unavailable.
    """
    room = parse_room_id(request.path_params["wedding_id"])
    if room is None:
        raise HttpError(404, "no such wedding id")
    gatekeeper: Gatekeeper = request.state.gatekeeper
    if not gatekeeper.development:
        admin_claims(request, gatekeeper)
    node: Node = request.state.node
    lease = await node.owner_of(room)  # BackendUnavailable: 503
    body = {"wedding_id": room, "owner": lease.holder, "fence": lease.fence, "node": node.node_id}
    return JSONResponse(body)
