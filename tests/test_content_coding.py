"""gateway/content_coding.py on its own: negotiation, the small-body rule, compression, ETags.

tests/test_http_api.py checks the same through a live gateway (headers, 304, 406).
"""

from __future__ import annotations

import gzip

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard

from gateway.content_coding import (
    MIN_COMPRESSED_BYTES,
    choose_coding,
    compress,
    entity_tag,
    if_none_match,
    negotiate,
)

BODY = b"the florist arrives early, the band sets up in the olive garden. " * 40


def test_negotiation_order() -> None:
    assert negotiate(None) == ["identity"]
    assert negotiate("gzip;q=0.5, identity;q=0.7, br;q=0.7") == ["br", "identity", "gzip"]
    assert negotiate("*;q=0.3, identity") == ["identity", "br", "zstd", "gzip"]
    assert negotiate("x-gzip") == ["gzip", "identity"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", ["identity"]),
        ("gzip, zstd, br", ["br", "zstd", "gzip", "identity"]),  # equal q: our preference
        ("deflate", ["identity"]),  # unknown codings are ignored, identity stays acceptable
        ("br;q=2, gzip", ["gzip", "identity"]),  # a malformed q-value drops its element
        ("GZIP;Q=1.0", ["gzip", "identity"]),
        ("br;q=0, *", ["zstd", "gzip", "identity"]),
        ("identity;q=0", []),
        ("*;q=0", []),
        ("*;q=0, identity", ["identity"]),
    ],
)
def test_negotiate(header: str, expected: list[str]) -> None:
    assert negotiate(header) == expected


def test_a_small_body_goes_identity_when_accepted() -> None:
    assert choose_coding(["br", "identity"], MIN_COMPRESSED_BYTES - 1) == "identity"
    assert choose_coding(["br", "identity"], MIN_COMPRESSED_BYTES) == "br"
    assert choose_coding(["br"], 1) == "br"  # identity refused: compressed however small


@pytest.mark.parametrize(
    ("coding", "decompress"),
    [
        ("br", brotli.decompress),
        ("zstd", zstandard.ZstdDecompressor().decompress),
        ("gzip", gzip.decompress),
        ("identity", bytes),
    ],
)
def test_compress_round_trips(coding: str, decompress: object) -> None:
    sent = compress(BODY, coding)
    assert callable(decompress)
    assert bytes(decompress(sent)) == BODY
    if coding != "identity":
        assert len(sent) < len(BODY)
    assert compress(BODY, coding) == sent  # deterministic (gzip without mtime): stable ETags


def test_entity_tags_are_strong_and_change_with_every_input() -> None:
    tag = entity_tag(BODY, "gzip", "1:10")
    assert tag[0] == tag[-1] == '"'  # strong: no W/
    assert entity_tag(BODY, "gzip", "1:10") == tag
    others = {
        entity_tag(BODY + b"!", "gzip", "1:10"),
        entity_tag(BODY, "br", "1:10"),
        entity_tag(BODY, "gzip", "1:11"),
        entity_tag(BODY, "gzip", "2:10"),
    }
    assert tag not in others
    assert len(others) == 4


def test_if_none_match() -> None:
    tag = entity_tag(BODY, "identity", "1:0")
    assert if_none_match(tag, tag)
    assert if_none_match(f'"other", W/{tag}', tag)  # weak comparison
    assert if_none_match(" * ", tag)
    assert not if_none_match('"other"', tag)
    assert not if_none_match(None, tag)
    assert not if_none_match(tag[:-2] + '"', tag)
