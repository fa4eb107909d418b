"""The ``/mux`` framing (proto/spec.md §10): the examples of the spec, and strict decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wedsync_protocol import ProtocolError, codec, mux
from wedsync_protocol.messages import Feature, Hello, SyncStep1, SyncUpdate


def test_the_spec_examples() -> None:
    token = bytes.fromhex("057765642d31 02 00 03746f6b 05342e382e30".replace(" ", ""))
    assert mux.encode_token("wed-1", "tok", "4.8.0") == token
    assert mux.decode_client(token) == mux.MuxFrame("wed-1", mux.MuxToken("tok", "4.8.0"))
    step1 = bytes.fromhex("057765642d3100000100")
    assert mux.decode_client(step1) == mux.MuxFrame("wed-1", SyncStep1(b"\x00"))
    hello = codec.encode(Hello(1, Feature.ACKS | Feature.REJECTS))
    assert mux.wrap_extension(hello) == "wedsync:ZAED"
    assert mux.unwrap_extension("wedsync:ZAED") == hello


def test_a_token_without_version_and_a_close() -> None:
    assert mux.decode_client(mux.encode_token("w", "t")).message == mux.MuxToken("t", "")
    assert mux.decode_client(mux.encode_close("w")).message == mux.CloseDocument("")
    assert isinstance(mux.decode_client(mux.PONG), mux.Pong)


@pytest.mark.parametrize(
    "data",
    [
        mux.encode_token("w", "t", "v") + b"\x00",  # trailing bytes after the version
        mux.prefix("w") + bytes((mux.MuxType.BROADCAST_STATELESS,)) + b"\x01x",
        mux.prefix("w") + bytes((mux.MuxType.SYNC_STATUS, 1)),
        mux.prefix("w") + bytes((mux.MuxType.PING,)),
        mux.prefix("w") + bytes((mux.MuxType.AUTH, mux.MuxAuthType.AUTHENTICATED)) + b"\x00",
        mux.prefix("w") + b"\x04",  # SyncReply is not a client message here
        mux.prefix("w") + codec.encode(SyncUpdate(b"\x00\x00")) + b"\x00",
        b"\x05wed",  # the name runs past the end
        mux.prefix("w") + b"\x64\x01\x03",  # a bare extension: must be wrapped
    ],
)
def test_malformed_client_messages_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        mux.decode_client(data)


def test_a_wedsync_payload_that_is_not_base64_is_refused() -> None:
    assert mux.unwrap_extension("hello") is None
    with pytest.raises(ProtocolError):
        mux.unwrap_extension("wedsync:!!")


def test_server_messages_decode() -> None:
    assert mux.decode_server(mux.encode_sync_status("w", False)) == (
        "w",
        mux.MuxType.SYNC_STATUS,
        False,
    )
    assert mux.decode_server(mux.encode_authenticated("w", "readonly"))[2] == (2, "readonly")
    assert mux.decode_server(mux.PING) == ("", mux.MuxType.PING, None)
    wrapped = mux.encode_message("w", Hello(1, Feature.ACKS))
    _, kind, payload = mux.decode_server(wrapped)
    assert kind == mux.MuxType.STATELESS
    assert codec.decode(mux.unwrap_extension(str(payload)) or b"") == Hello(1, Feature.ACKS)


VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "proto" / "vectors" / "mux.json").read_text("utf-8")
)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_vectors(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    if vector.get("error"):
        with pytest.raises(ProtocolError):
            mux.decode_client(data)
        return
    kind = vector["type"]
    if vector["sender"] == "client":
        frame = mux.decode_client(data)
        if kind == "pong":
            assert isinstance(frame, mux.Pong)
            return
        assert isinstance(frame, mux.MuxFrame)
        assert frame.document == vector["document"]
        if kind == "token":
            assert frame.message == mux.MuxToken(vector["token"], vector["version"])
            assert mux.encode_token(frame.document, vector["token"], vector["version"]) == data
        elif kind == "close":
            assert mux.encode_close(frame.document) == data
        elif kind == "stateless":
            assert frame.message == mux.Stateless(vector["payload"])
            ws = bytes.fromhex(vector["ws_hex"])
            assert mux.unwrap_extension(vector["payload"]) == ws
            assert mux.encode_message(frame.document, codec.decode(ws)) == data
        else:
            assert mux.encode_message(frame.document, frame.message) == data  # type: ignore[arg-type]
        return
    if kind == "authenticated":
        assert mux.encode_authenticated(vector["document"], vector["scope"]) == data
    elif kind == "permission-denied":
        assert mux.encode_permission_denied(vector["document"], vector["reason"]) == data
    elif kind == "sync-status":
        assert mux.encode_sync_status(vector["document"], vector["applied"]) == data
        assert mux.decode_server(data)[2] is vector["applied"]
    elif kind == "ping":
        assert data == mux.PING
