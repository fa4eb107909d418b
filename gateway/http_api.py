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
    Authorization``. ``Content-Encoding`` follows ``Accept-Encoding`` (q-values; br > zstd > gzip
    > identity on equal q); a body under ``MIN_COMPRESSED_BYTES`` goes identity whenever the
    client accepts identity (compression would grow it).

Both answer, with a JSON body ``{"error": "..."}``:

- 400: ``sv`` is not base64url or not exactly one state vector (a truncated or over-long
  varUint, a count larger than the bytes hold, trailing bytes, a clock above 2^32 - 1, given
  twice or empty: omit it for the whole document); 414: ``sv`` is longer than ``MAX_SV_CHARS``
  (64 KiB, a state vector of ~6,000 clients: it travels in the URL);
- 401 (``WWW-Authenticate: Bearer``) / 403: as the WebSocket (proto/spec.md §2.4), with the token
  from ``Authorization: Bearer`` or ``?token=``; every role may read; development mode (no keys)
  lets everyone read;
- 404: the wedding id is not ``^[A-Za-z0-9_-]{1,64}$``;
- 406: the client refuses identity and every coding we offer;
- 503: the store is unavailable (retry).

A wedding nobody ever wrote is an empty document (epoch 1, offset 0, the empty update
``00 00``), not a 404: a client resuming a brand-new wedding needs exactly that, and every
wedding id exists as far as the WebSocket is concerned.

The document comes from the room when this node has it loaded (read without an await between
the state and its encoding), else from the store, without loading the room: the Doc is rebuilt
from the history, in a worker thread when the history is large (``THREAD_HISTORY_BYTES``) so the
event loop is not held; that Doc never leaves the thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import brotli  # type: ignore[import-untyped]  # ships no type hints
import orjson
import structlog
import zstandard
from pycrdt import Array, Doc, Map
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.room import Room
from gateway.errors import BackendUnavailable, Forbidden, Unauthorized, WireProtocolError
from gateway.gatekeeper import Gatekeeper
from gateway.node import Node
from gateway.types import RoomId, parse_room_id
from wedsync_protocol.codec import check_state_vector, decode_state_vector, encode_state_vector

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_SV_CHARS = 64 << 10
"""Longest ``sv`` accepted (base64 characters); longer is 414."""
MAX_CLOCK = 2**32 - 1
"""yrs keeps clocks as u32: a larger one in a state vector is no clock a document can have."""
MIN_COMPRESSED_BYTES = 256
"""Bodies shorter than this are sent identity when the client accepts it."""
BROTLI_QUALITY = 5
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
"""Measured with ``python -m loadtest.bench_compression`` on a 5,000-edit wedding (a 103 KB
document): each is the knee of its coding's size/time curve. br 5: 32.7 KB in 2.4 ms (4 is no
smaller than 3; 6 saves 2 % for 20 % more time; 9 takes 19 ms); zstd 3: 34.7 KB in 0.4 ms (6
saves 3 % for 3x the time); gzip 6: 32.9 KB in 3.5 ms (9 saves nothing)."""
LEVELS = {"br": BROTLI_QUALITY, "zstd": ZSTD_LEVEL, "gzip": GZIP_LEVEL, "identity": 0}
PREFERENCE = ("br", "zstd", "gzip", "identity")
"""Codings we can send, preferred first among equal q-values."""
IMPLICIT_IDENTITY_Q = 0.001
"""Identity is acceptable unless refused (RFC 9110 §12.5.3), but after any coding offered."""
THREAD_HISTORY_BYTES = 64 << 10
"""Rebuild a history larger than this in a worker thread. Measured: 27 ms for a log of 5,000
updates (500 KB), 8 ms for its snapshot (425 KB), +8 ms for the JSON view; about 4 ms per 64
KiB. In a thread the event loop's longest stall for that log fell from 42 ms to 7 ms."""
THREAD_COMPRESS_BYTES = 64 << 10
"""Compress a body larger than this in a worker thread (br 5: about 25 ms per MB)."""
PRIVATE = "private, no-cache"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_QVALUE = re.compile(r"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)
_ETAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')


class HttpError(Exception):
    """A request this module refuses: the status and a sentence for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = orjson.dumps({"error": str(self)})
        headers = {"Cache-Control": "no-store", **self.headers}
        return Response(body, self.status, headers, media_type="application/json")


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """What one request rendered of a wedding, with the position it covers."""

    epoch: int
    offset: int
    value: T


# -- endpoints ------------------------------------------------------------------------------------


async def wedding_view(request: Request) -> Response:
    """``GET /v1/weddings/{wedding_id}``: the document as JSON (module docstring)."""
    try:
        room_id = authorize(request)
        read = await read_wedding(request.state.node, room_id, render_json, heavy=True)
    except HttpError as exc:
        return exc.response()
    body = {"wedding_id": room_id, "epoch": read.epoch, "offset": read.offset, **read.value}
    headers = {**_position(read), "Cache-Control": PRIVATE, "Vary": "Authorization"}
    return Response(orjson.dumps(body, default=_json_default), 200, headers, "application/json")


async def wedding_resume(request: Request) -> Response:
    """``GET /v1/weddings/{wedding_id}/resume``: what a state vector lacks (module docstring)."""
    try:
        room_id = authorize(request)
        state_vector = state_vector_param(request.query_params)
        codings = negotiate(request.headers.get("accept-encoding"))
        if not codings:
            raise HttpError(406, "no acceptable content coding: we offer br, zstd, gzip, identity")
        render = partial(render_update, state_vector=state_vector)
        read = await read_wedding(request.state.node, room_id, render)
    except HttpError as exc:
        return exc.response()
    coding = choose_coding(codings, len(read.value))
    etag = entity_tag(read, coding)
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
    """The wedding of the path, once the request's token may read it (every role may)."""
    room_id = parse_room_id(request.path_params["wedding_id"])
    if room_id is None:
        raise HttpError(404, "no such wedding: an id is 1-64 of A-Z a-z 0-9 _ -")
    gatekeeper: Gatekeeper = request.state.gatekeeper
    token = bearer_token(request)
    try:
        gatekeeper.grant(token, room_id)
    except Unauthorized as exc:
        challenge = "Bearer" if token is None else 'Bearer error="invalid_token"'
        raise HttpError(401, str(exc), {"WWW-Authenticate": challenge}) from None
    except Forbidden as exc:
        raise HttpError(403, str(exc)) from None
    return room_id


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer ...``, else of ``?token=`` (as the WebSocket)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    tokens = request.query_params.getlist("token")
    if len(tokens) > 1:
        raise HttpError(400, "token is given more than once")
    return tokens[0] if tokens and tokens[0] else None


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


# -- reading the document -------------------------------------------------------------------------


async def read_wedding(
    node: Node, room_id: RoomId, render: Callable[[Doc[Any]], T], *, heavy: bool = False
) -> Read[T]:
    """``render`` applied to the wedding's Doc: the loaded room's, else one rebuilt from the
    store (the room is not loaded for it).

    ``heavy``: ``render`` costs about as much as rebuilding the Doc (``to_py`` builds a Python
    object per value: 8 ms for a 5,000-edit wedding). Then a loaded room is only encoded on the
    event loop (0.5 ms for the same wedding), and the rendering happens on a Doc built from that
    update, in a thread when it is large.
    """
    room = node.room(room_id)
    if room is not None and not room.poisoned:
        # No await until the state is read: the position and the body are of one moment.
        epoch, offset = _room_epoch(room), _room_offset(room)
        if not heavy:
            return Read(epoch, offset, render(room.doc))
        blobs = [room.doc.get_update()]
    else:
        try:
            history = await node.store.load(room_id)
        except BackendUnavailable as exc:
            log.warning("http_read_failed", room=room_id, error=str(exc))
            raise HttpError(503, str(exc), {"Retry-After": "1"}) from None
        epoch, offset, blobs = history.epoch, history.last_offset, history.blobs()
    large = sum(map(len, blobs)) > THREAD_HISTORY_BYTES
    return Read(epoch, offset, await _off_loop(large, rebuild_and_render, blobs, render))


def rebuild_and_render(blobs: Sequence[bytes], render: Callable[[Doc[Any]], T]) -> T:
    """Build a Doc from stored blobs and render it; the Doc stays in the calling thread."""
    doc: Doc[Any] = Doc()
    for blob in blobs:
        doc.apply_update(blob)
    return render(doc)


def render_update(doc: Doc[Any], state_vector: bytes | None) -> bytes:
    return doc.get_update(state_vector) if state_vector is not None else doc.get_update()


def render_json(doc: Doc[Any]) -> dict[str, Any]:
    core: dict[str, Any] = doc.get("core", type=Map).to_py() or {}
    timeline: list[Any] = doc.get("timeline", type=Array).to_py() or []
    guest_count = core.get("guest_count")
    if isinstance(guest_count, float) and guest_count.is_integer():
        core["guest_count"] = int(guest_count)
    return {"core": core, "timeline": timeline}


def _room_epoch(room: Room) -> int:
    return room.epoch


def _room_offset(room: Room) -> int:
    """The room's position: every stored update up to it is in its Doc (proto §4.6)."""
    return room.position


def _json_default(value: object) -> object:
    if isinstance(value, bytes):  # Yjs binary content (never valid in the schema, but stored)
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def _off_loop(in_thread: bool, function: Callable[..., T], /, *args: Any) -> T:
    return await asyncio.to_thread(function, *args) if in_thread else function(*args)


# -- content coding -------------------------------------------------------------------------------


def negotiate(header: str | None) -> list[str]:
    """The codings of PREFERENCE the client accepts, best first: by q-value, then PREFERENCE.

    No header means identity only. ``*`` stands for every coding not listed. Identity is
    acceptable unless ``identity;q=0``, or ``*;q=0`` without an ``identity`` entry. An element
    with a malformed q-value is ignored.
    """
    if header is None:
        return ["identity"]
    weights: dict[str, float] = {}
    for element in header.split(","):
        name, _, params = element.partition(";")
        name = name.strip().lower()
        q = _qvalue(params)
        if name and q is not None:
            weights.setdefault("gzip" if name == "x-gzip" else name, q)
    star = weights.get("*")
    implicit_identity = IMPLICIT_IDENTITY_Q if star != 0 else 0.0
    accepted = {
        coding: weights.get(coding, implicit_identity if coding == "identity" else star or 0.0)
        for coding in PREFERENCE
    }
    ranked = sorted(PREFERENCE, key=lambda coding: -accepted[coding])  # stable: ties keep order
    return [coding for coding in ranked if accepted[coding] > 0]


def _qvalue(params: str) -> float | None:
    """The q of ``;q=0.5`` (1 when absent); None when malformed."""
    for param in params.split(";"):
        if param.strip().lower().startswith("q"):
            match = _QVALUE.fullmatch(param)
            return float(match.group(1)) if match else None
    return 1.0


def choose_coding(codings: Sequence[str], size: int) -> str:
    """The client's best coding; identity for a small body when the client accepts it."""
    if size < MIN_COMPRESSED_BYTES and "identity" in codings:
        return "identity"
    return codings[0]


def compress(body: bytes, coding: str) -> bytes:
    if coding == "br":
        return bytes(brotli.compress(body, quality=BROTLI_QUALITY))
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if coding == "gzip":
        return gzip.compress(body, GZIP_LEVEL, mtime=0)
    return body


def entity_tag(read: Read[bytes], coding: str) -> str:
    """A strong ETag: the same bytes, coding, level and position give the same tag.

    Encoding is deterministic for one Doc, but a Doc rebuilt from a compacted snapshot may split
    its structs differently than the loaded room's: then the same content gets another tag (a
    needless 200, never a wrong 304).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{read.epoch}:{read.offset}:{coding}:{LEVELS[coding]}:".encode())
    digest.update(read.value)
    return f'"{digest.hexdigest()}"'


def if_none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2) or is ``*``."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in (match.group(1) for match in _ETAG.finditer(header))
