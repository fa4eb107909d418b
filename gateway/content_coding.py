"""Content coding of HTTP bodies: ``Accept-Encoding`` negotiation, compression, entity tags.

Pure functions, no request objects: the endpoint (gateway/http_api.py) reads the headers and
passes them in. br > zstd > gzip > identity among equal q-values (RFC 9110 §12.5.3); a body
under ``MIN_COMPRESSED_BYTES`` goes identity whenever the client accepts identity (compression
would grow it).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Sequence

import brotli  # type: ignore[import-untyped]  # ships no type hints
import zstandard

__all__ = [
    "BROTLI_QUALITY",
    "GZIP_LEVEL",
    "LEVELS",
    "MIN_COMPRESSED_BYTES",
    "PREFERENCE",
    "ZSTD_LEVEL",
    "choose_coding",
    "compress",
    "entity_tag",
    "if_none_match",
    "negotiate",
]

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

_QVALUE = re.compile(r"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)
_ETAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')


def negotiate(header: str | None) -> list[str]:
    """The codings of PREFERENCE the client accepts, best first: by q-value, then PREFERENCE.

    No header means identity only. ``*`` stands for every coding not listed. Identity is
    acceptable unless ``identity;q=0``, or ``*;q=0`` without an ``identity`` entry. An element
    with a malformed q-value is ignored. An empty list: answer 406.
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
    """The client's best coding (``codings`` from ``negotiate``, not empty); identity for a
    small body when the client accepts it."""
    if size < MIN_COMPRESSED_BYTES and "identity" in codings:
        return "identity"
    return codings[0]


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in ``coding`` (one of PREFERENCE) at its level of LEVELS."""
    if coding == "br":
        return bytes(brotli.compress(body, quality=BROTLI_QUALITY))
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if coding == "gzip":
        return gzip.compress(body, GZIP_LEVEL, mtime=0)
    return body


def entity_tag(body: bytes, coding: str, version: str) -> str:
    """A strong ETag: the same bytes, coding, level and ``version`` give the same tag.

    ``version`` names what the body is of (e.g. ``"<epoch>:<offset>"``): two bodies equal by
    chance but of different versions get different tags.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{version}:{coding}:{LEVELS[coding]}:".encode())
    digest.update(body)
    return f'"{digest.hexdigest()}"'


def if_none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2) or is ``*``."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in (match.group(1) for match in _ETAG.finditer(header))
