"""HTTP reads of a wedding: its JSON view and a Yjs catch-up (issue 7).

``GET /v1/weddings/{wedding_id}``
    The document as JSON: ``{"wedding_id", "epoch", "offset", "core": {...}, "timeline": [...]}``,
    as pycrdt's ``to_py()`` gives it, except ``core.guest_count``: pycrdt reads every number as a
    float, so a whole ``120.0`` is rendered ``120`` (proto/schema.md: an integer field).

``GET /v1/weddings/{wedding_id}/resume?sv=<state vector>``
    ``application/octet-stream``: one Yjs v1 update holding everything the state vector lacks
    (``Doc.get_update(sv)``; without ``sv``, the whole document). ``sv`` is base64url (RFC 4648
    §5), padding optional. Headers: ``X-Wedsync-Epoch`` and ``X-Wedsync-Offset`` (the durable
    position the body covers: it holds at least every update stored up to that offset, maybe
    more), a strong ``ETag`` (a digest of the body, the coding and its level, the epoch and
    the offset: an unchanged document asked with the same ``sv`` gets the same one, and
    ``If-None-Match`` with it gets 304 without a body), ``Cache-Control: private, no-cache``
    (private data: a client may keep it but revalidates), ``Vary: Accept-Encoding,
    Authorization``. ``Content-Encoding`` follows ``Accept-Encoding`` (gateway/content_coding.py:
    q-values; br > zstd > gzip > identity on equal q; a small body goes identity whenever the
    client accepts identity).

Both answer, with a JSON body ``{"error": "..."}``:

- 400: ``sv`` is not base64url or not exactly one state vector (a truncated or over-long
  varUint, a count larger than the bytes hold, trailing bytes, a clock above 2^32 - 1, given
  twice or empty: omit it for the whole document), or ``token`` is given more than once (as the
  WebSocket's 4500, proto/spec.md §2.4); 414: ``sv`` is longer than ``MAX_SV_CHARS`` (64 KiB, a
  state vector of ~6,000 clients: it travels in the URL);
- 401 (``WWW-Authenticate: Bearer``, with ``error="invalid_token"`` when a token was given) /
  403: as the WebSocket (proto/spec.md §2.4), with the token
  from ``Authorization: Bearer`` or ``?token=``; every role may read; development mode (no keys)
  lets everyone read;
- 404: the wedding id is not ``^[A-Za-z0-9_-]{1,64}$``;
- 406: the client refuses identity and every coding we offer;
- 503 (``Retry-After: 1``): the store is unavailable (retry).

A wedding nobody ever wrote is an empty document (epoch 1, offset 0, the empty update
``00 00``), not a 404: a client resuming a brand-new wedding needs exactly that, and every
wedding id exists as far as the WebSocket is concerned.

The document is read through ``Node.read_document`` (gateway/documents.py: the loaded room, else
the store, without loading the room); content coding is gateway/content_coding.py. Refusals are
raised (``HttpError``, or a GatewayError: Unauthorized, Forbidden, BackendUnavailable,
ProtocolError) and rendered as JSON by gateway/http_errors.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import orjson
from pycrdt import Array, Doc, Map
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from gateway.content_coding import choose_coding, compress, entity_tag, if_none_match, negotiate
from gateway.documents import Read
from gateway.errors import WireProtocolError
from gateway.gatekeeper import Gatekeeper
from gateway.http_errors import HttpError
from gateway.node import Node
from gateway.types import RoomId, parse_room_id
from wedsync_protocol.codec import check_state_vector, decode_state_vector, encode_state_vector

T = TypeVar("T")

MAX_SV_CHARS = 64 << 10
"""Longest ``sv`` accepted (base64 characters); longer is 414."""
MAX_CLOCK = 2**32 - 1
"""yrs keeps clocks as u32: a larger one in a state vector is no clock a document can have."""
THREAD_COMPRESS_BYTES = 64 << 10
"""Compress a body larger than this in a worker thread (br 5: about 25 ms per MB)."""
PRIVATE = "private, no-cache"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


# -- endpoints ------------------------------------------------------------------------------------


async def wedding_view(request: Request) -> Response:
    """``GET /v1/weddings/{wedding_id}``: the document as JSON (module docstring)."""
    room_id = authorize(request)
    node: Node = request.state.node
    read = await node.read_document(room_id, render_json, heavy=True)
    body = {"wedding_id": room_id, "epoch": read.epoch, "offset": read.offset, **read.value}
    headers = {**_position(read), "Cache-Control": PRIVATE, "Vary": "Authorization"}
    return Response(orjson.dumps(body, default=_json_default), 200, headers, "application/json")


async def wedding_resume(request: Request) -> Response:
    """``GET /v1/weddings/{wedding_id}/resume``: what a state vector lacks (module docstring)."""
    room_id = authorize(request)
    state_vector = state_vector_param(request.query_params)
    codings = negotiate(request.headers.get("accept-encoding"))
    if not codings:
        raise HttpError(406, "no acceptable content coding: we offer br, zstd, gzip, identity")
    node: Node = request.state.node
    read = await node.read_document(room_id, partial(render_update, state_vector=state_vector))
    coding = choose_coding(codings, len(read.value))
    etag = entity_tag(read.value, coding, f"{read.epoch}:{read.offset}")
    headers = {
        **_position(read),
        "ETag": etag,
        "Cache-Control": PRIVATE,
        "Vary": "Accept-Encoding, Authorization",
    }
    if if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if coding != "identity":
        headers["Content-Encoding"] = coding
    body = await _off_loop(len(read.value) > THREAD_COMPRESS_BYTES, compress, read.value, coding)
    return Response(body, 200, headers, media_type="application/octet-stream")


def _position(read: Read[Any]) -> dict[str, str]:
    return {"X-Wedsync-Epoch": str(read.epoch), "X-Wedsync-Offset": str(read.offset)}


# -- who may read ---------------------------------------------------------------------------------


def authorize(request: Request) -> RoomId:
    """The wedding of the path, once the request's token may read it (every role may).

    The token is the gatekeeper's to find (``Authorization: Bearer``, else ``?token=``) and to
    check; its Unauthorized / Forbidden / ProtocolError propagate (401 / 403 / 400).
    """
    room_id = parse_room_id(request.path_params["wedding_id"])
    if room_id is None:
        raise HttpError(404, "no such wedding: an id is 1-64 of A-Z a-z 0-9 _ -")
    gatekeeper: Gatekeeper = request.state.gatekeeper
    gatekeeper.grant(gatekeeper.token_in(request.scope), room_id)
    return room_id


# -- the state vector -----------------------------------------------------------------------------


def state_vector_param(params: QueryParams) -> bytes | None:
    """The ``sv`` parameter, decoded and checked; None when absent (the whole document)."""
    values = params.getlist("sv")
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, "sv is given more than once")
    return parse_state_vector(values[0])


def parse_state_vector(text: str) -> bytes:
    """Decode a base64url state vector; returns it re-encoded in canonical form.

    The bytes are read by the core's bounded reader: a count larger than the bytes left can
    hold is refused before any pair is read, every varUint is at most 10 bytes, and nothing may
    follow the last pair; so decoding is linear in the (bounded) input.
    """
    if len(text) > MAX_SV_CHARS:
        raise HttpError(414, f"sv is longer than {MAX_SV_CHARS} characters")
    if not text:
        raise HttpError(400, "sv is empty: omit it to get the whole document")
    if not _BASE64URL.fullmatch(text) or len(text.rstrip("=")) % 4 == 1:
        raise HttpError(400, "sv is not base64url (A-Z a-z 0-9 - _, padding optional)")
    digits = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(digits + "=" * (-len(digits) % 4))
    except binascii.Error as exc:  # unreachable after the pattern check; kept as a guard
        raise HttpError(400, f"sv is not base64url: {exc}") from None
    try:
        check_state_vector(raw)
    except WireProtocolError as exc:
        raise HttpError(400, f"sv is not a state vector: {exc}") from None
    clocks = decode_state_vector(raw)
    too_big = [client for client, clock in clocks.items() if clock > MAX_CLOCK]
    if too_big:
        raise HttpError(400, f"sv has a clock above 2^32 - 1 (client {too_big[0]})")
    return encode_state_vector(clocks)


# -- rendering the document ----------------------------------------------------------------------


def render_update(doc: Doc[Any], state_vector: bytes | None) -> bytes:
    return doc.get_update(state_vector) if state_vector is not None else doc.get_update()


def render_json(doc: Doc[Any]) -> dict[str, Any]:
    core: dict[str, Any] = doc.get("core", type=Map).to_py() or {}
    timeline: list[Any] = doc.get("timeline", type=Array).to_py() or []
    guest_count = core.get("guest_count")
    if isinstance(guest_count, float) and guest_count.is_integer():
        core["guest_count"] = int(guest_count)
    return {"core": core, "timeline": timeline}


def _json_default(value: object) -> object:
    if isinstance(value, bytes):  # Yjs binary content (never valid in the schema, but stored)
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def _off_loop(in_thread: bool, function: Callable[..., T], /, *args: Any) -> T:
    return await asyncio.to_thread(function, *args) if in_thread else function(*args)
