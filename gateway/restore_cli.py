"""``gateway restore WEDDING_ID --at TIME | --offset N``: restore a wedding through a gateway.

The restore is made by a running gateway (``POST /v1/weddings/{id}/restore``), never by writing
the store behind its back: the change goes through the wedding's judge like any update, every
connected client converges to it, and the audit records it as a restore (gateway/history_api.py).
The request is authorised by ``--token`` or, with ``GATEWAY_JWT_SECRET`` set, by a one-minute
admin token this command signs (subject ``gateway-cli``); development mode needs none. Prints the
gateway's JSON answer; exits 0 when restored, 1 when the gateway refused (its error on stderr),
2 when it could not ask (bad arguments, gateway unreachable).
"""

from __future__ import annotations

import argparse
import sys

import httpx

from gateway.auth import issue_token
from gateway.settings import Settings
from gateway.types import parse_room_id

TOKEN_SECONDS = 60.0
"""Lifetime of the admin token the command signs for its one request."""
TIMEOUT_SECONDS = 30.0
"""How long the command waits for the gateway's answer."""


def run(settings: Settings, args: argparse.Namespace) -> int:
    room = parse_room_id(args.wedding_id)
    if room is None:
        print(f"gateway: {args.wedding_id!r} is not a valid wedding id.", file=sys.stderr)
        return 2
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    body = {"at": args.at} if args.at is not None else {"offset": args.offset}
    headers = {}
    token = args.token or _admin_token(settings)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        answer = httpx.post(
            f"{url}/v1/weddings/{room}/restore", json=body, headers=headers, timeout=TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        print(f"gateway: {url} could not be asked: {exc}", file=sys.stderr)
        return 2
    if answer.status_code != 200:
        print(f"gateway: restore refused ({answer.status_code}): {answer.text}", file=sys.stderr)
        return 1
    print(answer.text)
    return 0


def _admin_token(settings: Settings) -> str | None:
    if settings.jwt_secret is None:
        return None
    return issue_token(
        settings.jwt_secret,
        subject="gateway-cli",
        weddings={},
        ttl_seconds=TOKEN_SECONDS,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        admin=True,
    )
