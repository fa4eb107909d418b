"""gateway_client.sync.ClientSync: the connection rules every client shares (proto/spec.md §4).

The vectors (proto/vectors/messages.json) are decoded by ``wedsync_protocol``, the package both
the client and the server use, and each must reach the replica as the value the vector states.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from gateway_client.sync import ClientSync, Origin
from tests.proto.test_codec import to_message
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AUTH_TOKEN,
    CATCH_UP_GZIP,
    CATCH_UP_RESET,
    Ack,
    Auth,
    AwarenessUpdate,
    CatchUp,
    Drain,
    Feature,
    Hello,
    Message,
    Position,
    QueryAwareness,
    Reject,
    Resume,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "proto" / "vectors" / "messages.json").read_text()
)
FROM_SERVER = [v for v in VECTORS if "decoded" in v and v["sender"] in ("server", "any")]
SV = b"\x01\x07\x03"  # one client (7) at clock 3


class Recorder:
    """A Replica that records every call; ``answers`` and ``pending`` shape its replies."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers = True
        self.pending: list[bytes] = []  # what resend() returns (once)
        self.sync = ClientSync(self, features=Feature.ACKS | Feature.RESUME, resume=True)

    def received(self, update: bytes, origin: Origin) -> None:
        self.calls.append(("received", (update, origin)))

    def answer(self, state_vector: bytes) -> bytes | None:
        self.calls.append(("answer", state_vector))
        return b"diff:" + state_vector if self.answers else None

    def resend(self) -> list[bytes]:
        self.calls.append(("resend", None))
        out, self.pending = self.pending, []
        return out

    def acknowledged(self, seq: int) -> None:
        self.calls.append(("acknowledged", seq))

    def other(self, message: Message) -> None:
        self.calls.append(("other", message))


def decoded(messages: Any) -> list[Message]:
    return [codec.decode_server_message(m) for m in messages]


@pytest.mark.parametrize("vector", FROM_SERVER, ids=[v["name"] for v in FROM_SERVER])
def test_every_server_vector_reaches_the_replica_as_its_stated_value(
    vector: dict[str, Any],
) -> None:
    replica = Recorder()
    sync = replica.sync
    sync.resume = False  # answer a sync step 1 at once: the answer is part of what is checked
    sync.connection_made(b"\x00")
    replica.calls.clear()
    expected = to_message(vector["decoded"])

    replies = sync.receive_data(bytes.fromhex(vector["hex"]))

    match expected:
        case SyncUpdate(update):
            assert replica.calls == [("received", (update, Origin.UPDATE))]
        case SyncStep2(update):
            assert replica.calls == [("received", (update, Origin.STEP2))]
            assert sync.synced
        case SyncStep1(state_vector):
            assert replica.calls == [("answer", state_vector)]
            assert decoded(replies) == [SyncStep2(b"diff:" + state_vector)]
            assert sync.seq == 1
        case Ack(seq):
            assert replica.calls == [("acknowledged", seq)]
        case Position(epoch, offset):
            assert (sync.epoch, sync.offset, replica.calls) == (epoch, offset, [])
        case CatchUp(epoch, offset, _, update):
            raw = gzip.decompress(update) if expected.gzip else update
            origin = Origin.RESET if expected.reset else Origin.CATCH_UP
            assert replica.calls == [("received", (raw, origin)), ("resend", None)]
            assert (sync.epoch, sync.offset, sync.catch_up_bytes) == (epoch, offset, len(update))
        case Hello(_, features):
            assert sync.acks_enabled == (Feature.ACKS in features)
            assert replica.calls == []
        case _:
            assert replica.calls == [("other", expected)]
    if not isinstance(expected, SyncStep1):
        assert replies == ()


def test_a_connection_opens_with_auth_hello_then_resume_at_the_last_position() -> None:
    replica = Recorder()
    replica.sync.token = "t"
    replica.sync.epoch, replica.sync.offset = 2, 40

    opening = replica.sync.connection_made(SV)

    assert [codec.decode(m) for m in opening] == [
        Auth(AUTH_TOKEN, "t"),
        Hello(1, Feature.ACKS | Feature.RESUME),
        Resume(2, 40, SV),
    ]
    assert replica.calls == []  # resending waits for the CATCH_UP (§4.6)


def test_a_stock_client_says_no_hello_and_resends_right_after_its_step_1() -> None:
    replica = Recorder()
    sync = ClientSync(replica, features=None)
    replica.pending = [b"resent"]

    opening = sync.connection_made(SV)

    assert [codec.decode(m) for m in opening[:1]] == [SyncStep1(SV)]
    assert opening[1:] == [b"resent"]
    assert replica.calls == [("resend", None)]


def test_the_servers_step_1_is_answered_after_the_catch_up_then_edits_are_resent() -> None:
    replica = Recorder()
    sync = replica.sync
    sync.connection_made(SV)
    replica.pending = [b"resent"]

    assert sync.receive(SyncStep1(b"\x00")) == ()
    assert replica.calls == []  # held: the document may belong to a reset history
    out = sync.receive(CatchUp(3, 9, CATCH_UP_RESET, b"\x00\x00"))

    assert replica.calls == [
        ("received", (b"\x00\x00", Origin.RESET)),
        ("answer", b"\x00"),
        ("resend", None),
    ]
    assert decoded(out[:1]) == [SyncStep2(b"diff:\x00")]
    assert out[1:] == (b"resent",)
    assert (sync.epoch, sync.offset, sync.synced, sync.seq) == (3, 9, True, 1)
    replica.calls.clear()
    assert decoded(sync.receive(SyncStep1(SV))) == [SyncStep2(b"diff:" + SV)]  # live: at once


def test_a_gzip_catch_up_is_decompressed_and_measured_as_received() -> None:
    replica = Recorder()
    replica.sync.connection_made(SV)
    update = bytes(range(200)) * 10
    packed = gzip.compress(update)

    replica.sync.receive(CatchUp(1, 5, CATCH_UP_GZIP, packed))

    assert replica.calls[0] == ("received", (update, Origin.CATCH_UP))
    assert replica.sync.catch_up_bytes == len(packed)


def test_an_unanswered_step_1_sends_nothing_and_takes_no_sequence_number() -> None:
    replica = Recorder()
    replica.answers = False
    sync = replica.sync
    sync.resume = False
    sync.connection_made(SV)

    assert sync.receive(SyncStep1(b"\x00")) == ()
    assert sync.seq == 0
    assert sync.document(SyncUpdate(b"\x00\x00")) == (1, codec.encode(SyncUpdate(b"\x00\x00")))


def test_a_new_connection_numbers_from_one_and_forgets_the_held_step_1() -> None:
    replica = Recorder()
    sync = replica.sync
    sync.connection_made(SV)
    sync.receive(Hello(1, Feature.ACKS))
    sync.document(SyncUpdate(b"\x00\x00"))
    sync.receive(SyncStep1(b"\x00"))  # held, then the connection drops

    sync.connection_made(SV)
    sync.receive(CatchUp(1, 1, 0, b"\x00\x00"))

    assert ("answer", b"\x00") not in replica.calls  # the old connection's step 1 is gone
    assert not sync.acks_enabled  # until this connection's HELLO answer
    assert sync.document(SyncUpdate(b"\x00\x00"))[0] == 1


@pytest.mark.parametrize(
    "message",
    [Reject(1, "core.venue", "too long"), Drain(500), AwarenessUpdate(b"\x00"), QueryAwareness()],
)
def test_messages_without_a_connection_rule_go_to_the_replica(message: Message) -> None:
    replica = Recorder()
    replica.sync.connection_made(SV)
    assert replica.sync.receive(message) == ()
    assert replica.calls == [("other", message)]
