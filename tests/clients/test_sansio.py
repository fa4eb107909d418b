"""The Python client's protocol: vectors, ack tracking, resend after reconnect. No I/O."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway_client import Acknowledgement, ClientProtocol, backoff
from wedsync_protocol import codec
from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import (
    AUTH_TOKEN,
    CATCH_UP_RESET,
    EMPTY_UPDATE,
    Ack,
    Auth,
    CatchUp,
    Drain,
    Feature,
    Hello,
    Position,
    Reject,
    Resume,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "proto" / "vectors" / "messages.json").read_text()
)
FROM_SERVER_VALID = [v for v in VECTORS if "decoded" in v and v["sender"] in ("server", "any")]
FROM_SERVER_INVALID = [v for v in VECTORS if "error" in v and v["sender"] in ("server", "any")]


def new_client(*, acks: bool = True, resume: bool = True) -> ClientProtocol:
    return ClientProtocol(Doc(), acks=acks, resume=resume)


def edit(client: ClientProtocol, **fields: Any) -> None:
    core = client.doc.get("core", type=Map)
    with client.doc.transaction():
        for key, value in fields.items():
            core[key] = value


def decoded(messages: list[bytes]) -> list[Any]:
    return [codec.decode(m) for m in messages]


@pytest.mark.parametrize("vector", FROM_SERVER_VALID, ids=[v["name"] for v in FROM_SERVER_VALID])
def test_client_accepts_every_valid_server_vector(vector: dict[str, Any]) -> None:
    client = new_client()
    client.connection_made()
    client.receive_data(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize(
    "vector", FROM_SERVER_INVALID, ids=[v["name"] for v in FROM_SERVER_INVALID]
)
def test_client_refuses_every_invalid_server_vector(vector: dict[str, Any]) -> None:
    client = new_client()
    client.connection_made()
    with pytest.raises(ProtocolError):
        client.receive_data(bytes.fromhex(vector["hex"]))


def test_connection_opens_with_hello_then_resume() -> None:
    client = new_client()
    messages = decoded(client.connection_made())
    features = Feature.ACKS | Feature.REJECTS | Feature.RESUME | Feature.GZIP
    assert messages == [Hello(1, features), Resume(0, 0, client.doc.get_state())]
    assert decoded(new_client(acks=False).connection_made()) == [SyncStep1(b"\x00")]
    plain = ClientProtocol(Doc(), resume=False)
    assert decoded(plain.connection_made())[1] == SyncStep1(b"\x00")


def test_catch_up_and_position_move_the_resume_point_and_a_reset_replaces_the_doc() -> None:
    client = new_client()
    client.connection_made()
    source: Doc[Any] = Doc()
    source.get("core", type=Map)["venue"] = "Hall"
    client.receive_data(codec.encode(CatchUp(3, 17, 0, source.get_update())))
    assert (client.epoch, client.position, client.synced) == (3, 17, True)
    client.receive_data(codec.encode(Position(3, 20)))
    assert client.position == 20
    old = client.doc
    old.get("core", type=Map)["notes"] = "local, never acknowledged"
    fresh: Doc[Any] = Doc()
    fresh.get("core", type=Map)["venue"] = "Barn"
    client.receive_data(codec.encode(CatchUp(4, 2, CATCH_UP_RESET, fresh.get_update())))
    assert client.doc is not old
    assert client.doc.get("core", type=Map).to_py() == {"venue": "Barn"}
    assert (client.epoch, client.position, client.resets, client.unacked) == (4, 2, 1, 0)


def test_a_token_is_sent_first_on_each_connection_and_a_refresh_at_once() -> None:
    client = ClientProtocol(Doc(), acks=False, token="t1")
    assert decoded(client.connection_made()) == [Auth(AUTH_TOKEN, "t1"), SyncStep1(b"\x00")]
    assert decoded(client.refresh_token("t2")) == [Auth(AUTH_TOKEN, "t2")]
    client.connection_lost()
    assert client.refresh_token("t3") == []
    assert decoded(client.connection_made())[0] == Auth(AUTH_TOKEN, "t3")


def test_server_step1_is_answered_and_step2_marks_synced() -> None:
    client = new_client(resume=False)  # the y-websocket flow: step 1 answered at once
    client.connection_made()
    (reply,) = client.receive_data(codec.encode(SyncStep1(b"\x00")))
    assert isinstance(codec.decode(reply), SyncStep2)
    assert not client.synced
    client.receive_data(codec.encode(SyncStep2(b"\x00\x00")))
    assert client.synced


def test_cumulative_ack_makes_edits_durable_in_order() -> None:
    client = new_client()
    client.connection_made()
    client.receive_data(codec.encode(Hello(1, Feature.ACKS)))
    edit(client, venue="Hall")
    edit(client, guest_count=80)
    sent = decoded(client.data_to_send())
    assert [type(m) for m in sent] == [SyncUpdate, SyncUpdate]
    assert (client.local_version, client.unacked) == (2, 2)
    client.receive_data(codec.encode(Ack(1)))
    assert (client.durable_version, client.unacked) == (1, 1)
    client.receive_data(codec.encode(Ack(2)))
    assert (client.durable_version, client.unacked) == (2, 0)


def test_on_ack_reports_every_ack_with_the_edits_it_made_durable() -> None:
    client = new_client()
    seen: list[Acknowledgement] = []
    client.on_ack = seen.append
    client.connection_made()
    client.receive_data(codec.encode(Hello(1, Feature.ACKS)))
    edit(client, venue="Hall")
    edit(client, guest_count=80)
    client.data_to_send()
    client.receive_data(codec.encode(Ack(2)))
    client.receive_data(codec.encode(Ack(2)))  # a repeated ACK covers nothing new
    assert seen == [Acknowledgement(2, 2, 0, 2), Acknowledgement(2, 2, 2, 2)]


def test_step2_reply_counts_in_seq_but_makes_no_edit_durable() -> None:
    client = new_client(resume=False)  # the y-websocket flow: step 1 answered at once
    client.connection_made()
    client.receive_data(codec.encode(SyncStep1(b"\x00")))  # reply is seq 1
    edit(client, venue="Hall")  # seq 2
    client.data_to_send()
    client.receive_data(codec.encode(Ack(1)))
    assert client.durable_version == 0
    client.receive_data(codec.encode(Ack(2)))
    assert client.durable_version == 1


def test_edits_made_offline_are_resent_merged_on_reconnect() -> None:
    client = new_client()
    client.connection_made()
    edit(client, venue="Hall")
    client.data_to_send()
    client.connection_lost()
    edit(client, notes="offline")
    assert client.data_to_send() == []  # nothing is sent while offline
    _hello, resume = decoded(client.connection_made())
    assert isinstance(resume, Resume)
    assert client.receive_data(codec.encode(SyncStep1(b"\x00"))) == []  # held until caught up
    # resent once the server said where the document stands (it may have been reset)
    step2, resend = decoded(client.receive_data(codec.encode(CatchUp(1, 5, 0, EMPTY_UPDATE))))
    assert isinstance(step2, SyncStep2)
    assert isinstance(resend, SyncUpdate)
    other: Doc[Any] = Doc()
    other.apply_update(resend.update)
    assert other.get("core", type=Map).to_py() == {"venue": "Hall", "notes": "offline"}
    client.receive_data(codec.encode(Ack(2)))  # the resend is this connection's seq 2
    assert (client.durable_version, client.unacked) == (2, 0)


def test_without_resume_the_resend_follows_step_1() -> None:
    client = ClientProtocol(Doc(), resume=False)
    client.connection_made()
    edit(client, venue="Hall")
    client.connection_lost()
    _hello, step1, resend = decoded(client.connection_made())
    assert isinstance(step1, SyncStep1)
    assert isinstance(resend, SyncUpdate)


def test_remote_updates_are_not_echoed_as_local_edits() -> None:
    source = new_client()
    edit(source, venue="Hall")
    update = source.doc.get_update()
    client = new_client()
    client.connection_made()
    client.receive_data(codec.encode(SyncUpdate(update)))
    assert client.data_to_send() == []
    assert client.local_version == 0
    assert client.doc.get("core", type=Map).to_py() == {"venue": "Hall"}


def test_reject_and_drain_are_recorded() -> None:
    client = new_client()
    client.connection_made()
    client.receive_data(codec.encode(Reject(3, "core.wedding_date", "vendor may not write it")))
    client.receive_data(codec.encode(Drain(250)))
    assert client.rejected == [Reject(3, "core.wedding_date", "vendor may not write it")]
    assert client.drain == Drain(250)


def test_backoff_starts_random_then_grows_by_the_golden_ratio_up_to_the_cap() -> None:
    delays = backoff(initial=1.0, max_delay=10.0, rand=lambda: 0.5)
    first = [next(delays) for _ in range(8)]
    assert first[0] == 0.5
    assert first[1] == pytest.approx(0.5 * 1.618)
    assert all(b >= a for a, b in itertools.pairwise(first))
    assert first[-1] == 10.0
