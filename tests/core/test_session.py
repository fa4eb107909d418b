"""gateway.core.session: one client's protocol state. Pure and synchronous."""

from __future__ import annotations

import pytest

from gateway.core.session import Session, SessionState
from gateway.errors import MessageTooBig, ProtocolError
from wedsync_protocol.messages import Feature, Hello, SyncUpdate

EMPTY_SYNC_UPDATE = bytes.fromhex("0002020000")


def test_new_session_is_connecting_without_features_or_messages() -> None:
    session = Session(max_message_bytes=64)
    assert session.state is SessionState.CONNECTING
    assert session.features == Feature(0)
    assert not session.wants_acks
    assert not session.live
    assert session.seq == 0
    assert session.owned_client_ids == set()


def test_sessions_get_distinct_ids() -> None:
    assert len({Session(max_message_bytes=64).id for _ in range(5)}) == 5


def test_receive_data_returns_the_decoded_message() -> None:
    session = Session(max_message_bytes=64)
    assert session.receive_data(EMPTY_SYNC_UPDATE) == SyncUpdate(b"\x00\x00")
    assert session.receive_data(bytes.fromhex("640101")) == Hello(1, Feature.ACKS)


def test_message_of_exactly_the_limit_is_accepted() -> None:
    session = Session(max_message_bytes=len(EMPTY_SYNC_UPDATE))
    assert session.receive_data(EMPTY_SYNC_UPDATE) == SyncUpdate(b"\x00\x00")


def test_message_one_byte_over_the_limit_raises_message_too_big_with_1009() -> None:
    session = Session(max_message_bytes=len(EMPTY_SYNC_UPDATE) - 1)
    with pytest.raises(MessageTooBig, match="5 bytes exceeds the limit of 4") as caught:
        session.receive_data(EMPTY_SYNC_UPDATE)
    assert caught.value.close_code == 1009
    assert isinstance(caught.value, ProtocolError)


def test_size_is_checked_before_decoding() -> None:
    session = Session(max_message_bytes=2)
    with pytest.raises(MessageTooBig):
        session.receive_data(b"\x04\x04\x04")  # unknown type, but too big first


def test_malformed_message_raises_protocol_error() -> None:
    session = Session(max_message_bytes=64)
    with pytest.raises(ProtocolError, match="trailing"):
        session.receive_data(EMPTY_SYNC_UPDATE + b"\x00")


def test_receive_data_does_not_count_messages() -> None:
    session = Session(max_message_bytes=64)
    session.receive_data(EMPTY_SYNC_UPDATE)
    assert session.seq == 0  # the room counts document-bearing messages (proto/spec.md §4.2)


def test_next_seq_counts_from_one() -> None:
    session = Session(max_message_bytes=64)
    assert [session.next_seq() for _ in range(3)] == [1, 2, 3]
    assert session.seq == 3


def test_wants_acks_follows_the_acks_feature() -> None:
    session = Session(max_message_bytes=64)
    session.accept(Feature.ACKS)
    assert session.wants_acks
    session.accept(Feature(0))
    assert not session.wants_acks


def test_only_a_live_session_is_live() -> None:
    session = Session(max_message_bytes=64)
    for state in SessionState:
        session.state = state
        assert session.live is (state is SessionState.LIVE)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    from gateway.core.limits import TokenBucket

    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(1, 0.05)  # half a token earned
    assert bucket.take(1, 0.1)
    assert bucket.take(3, 100.0)  # never more than the burst is saved up
    assert not bucket.take(1, 100.0)


def test_token_bucket_owes_a_debt_and_says_how_long_to_pay_it() -> None:
    from gateway.core.limits import TokenBucket

    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    assert [bucket.owe(1, 0.0) for _ in range(4)] == [0.0, 0.0, 0.1, 0.2]
    assert bucket.owe(1, 0.2) == pytest.approx(0.1)  # 0.2 s paid two tokens of the debt
    assert bucket.owe(0, 10.0) == 0.0  # paid, then saved up to the burst again
    assert bucket.tokens == 2


def test_a_session_over_its_message_rate_is_paced_and_its_messages_still_decoded() -> None:
    from gateway.core.limits import Limits

    limits = Limits(messages_per_second=10, message_burst=2)
    session = Session(max_message_bytes=64, limits=limits, now=0.0)
    pauses = []
    for _ in range(4):
        assert session.receive_data(EMPTY_SYNC_UPDATE, 0.0) is not None
        pauses.append(session.pause(0.0))
    assert pauses == [0.0, 0.0, pytest.approx(0.1), pytest.approx(0.2)]
    assert session.pause(0.0) == 0.0  # a pause is asked for once per message


def test_a_session_over_its_byte_rate_is_paced() -> None:
    from gateway.core.limits import Limits

    size = len(EMPTY_SYNC_UPDATE)
    session = Session(
        max_message_bytes=64, limits=Limits(bytes_per_second=size, byte_burst=size), now=0.0
    )
    session.receive_data(EMPTY_SYNC_UPDATE, 0.0)
    assert session.pause(0.0) == 0.0
    session.receive_data(EMPTY_SYNC_UPDATE, 0.0)
    assert session.pause(0.0) == pytest.approx(1.0)  # one message's bytes at one per second


def test_a_session_held_back_too_long_in_its_window_raises_rate_limited() -> None:
    from gateway.core.limits import Limits
    from gateway.errors import RateLimited

    limits = Limits(
        messages_per_second=10, message_burst=1, rate_pacing_seconds=0.3, rate_window_seconds=30
    )
    session = Session(max_message_bytes=64, limits=limits, now=0.0)
    now = 0.0
    for _ in range(3):  # each message after the burst costs 0.1 s of pacing: 0.2 s so far
        session.receive_data(EMPTY_SYNC_UPDATE, now)
        now += session.pause(now)
    session.receive_data(EMPTY_SYNC_UPDATE, now)
    now += session.pause(now)  # 0.3 s, refilled by 0.3 s x 0.01/s: just within
    session.receive_data(EMPTY_SYNC_UPDATE, now)
    with pytest.raises(RateLimited, match=r"held back more than 0.3 s in 30 s"):
        session.pause(now)


def test_pacing_is_forgiven_over_the_window() -> None:
    from gateway.core.limits import Limits

    limits = Limits(
        messages_per_second=10, message_burst=1, rate_pacing_seconds=0.3, rate_window_seconds=30
    )
    session = Session(max_message_bytes=64, limits=limits, now=0.0)
    now = 0.0
    for _ in range(40):  # a burst now and then, never for long: paced, never closed
        for _ in range(3):
            session.receive_data(EMPTY_SYNC_UPDATE, now)
            now += session.pause(now)
        now += 30.0
    assert session.pacing is not None
    assert session.pacing.tokens > 0
