"""gateway/telemetry.py: the hot-path instruments behind /metrics."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.enforcer import Refusal
from gateway.overload import LoopLag
from gateway.telemetry import (
    LATENCY_BUCKETS,
    Histogram,
    Telemetry,
    platform_of,
    refusal_class,
)
from tests.helpers import eventually


def test_a_histogram_counts_a_value_equal_to_a_bound_in_that_bound_s_bucket() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.total == pytest.approx(8.65)


def test_a_quantile_is_the_bound_of_the_bucket_that_holds_it() -> None:
    histogram = Histogram(LATENCY_BUCKETS)
    assert histogram.quantile(0.99) is None
    for _ in range(98):
        histogram.observe(0.003)  # the 0.005 bucket
    histogram.observe(0.3)
    histogram.observe(30.0)
    assert histogram.quantile(0.5) == 0.005
    assert histogram.quantile(0.99) == 0.5
    assert histogram.quantile(1.0) == float("inf")


@pytest.mark.parametrize(
    ("declared", "label"),
    [
        ("web", "web"),
        ("pwa", "pwa"),
        ("ios", "ios"),
        ("android", "android"),
        ("integration", "integration"),
        ("IOS", "unknown"),
        ("toaster", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_a_declared_platform_is_one_of_five_labels_or_unknown(
    declared: str | None, label: str
) -> None:
    assert platform_of(declared) == label


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        (Refusal("core.venue", "role vendor may not write core fields"), ("core", "permission")),
        (Refusal("core.guest_count", "must be 0-5000, not 9000"), ("core", "schema")),
        (
            Refusal("timeline[dinner].title", "vendor v1 may edit only its own entries"),
            ("timeline", "permission"),
        ),
        (Refusal("timeline[#2]", "a timeline entry must be a Y.Map"), ("timeline", "schema")),
        (Refusal("document", "role viewer may not write"), ("document", "permission")),
    ],
)
def test_a_refusal_is_counted_by_area_and_reason_never_by_its_text(
    refusal: Refusal, expected: tuple[str, str]
) -> None:
    assert refusal_class(refusal) == expected


def test_closes_are_counted_by_known_code_and_slow_clients_apart() -> None:
    telemetry = Telemetry()
    for code in (1000, 4001, 4001, 3999, 4777):
        telemetry.closed(code)
    assert {code: n for code, n in telemetry.closes.items() if n} == {
        "1000": 1,
        "4001": 2,
        "other": 2,
    }
    assert telemetry.slow_client_closes == 2


def test_connections_by_platform_go_up_on_join_and_down_on_leave() -> None:
    telemetry = Telemetry()
    telemetry.joined("ios")
    telemetry.joined("ios")
    telemetry.joined("unknown")
    telemetry.left("ios")
    assert telemetry.platforms == {
        "web": 0,
        "pwa": 0,
        "ios": 1,
        "android": 0,
        "integration": 0,
        "unknown": 1,
    }


async def test_the_loop_lag_probe_fills_the_histogram_and_sees_a_blocked_loop() -> None:
    telemetry = Telemetry()
    lag = LoopLag(telemetry.loop_lag.observe)  # as the node wires its one probe
    probe = asyncio.get_running_loop().create_task(lag.run(0.01))
    try:
        await eventually(lambda: telemetry.loop_lag.count >= 1)
        blocked_until = asyncio.get_running_loop().time() + 0.3
        while asyncio.get_running_loop().time() < blocked_until:
            pass  # the loop runs nothing else meanwhile: the probe wakes late
        await eventually(lambda: lag.seconds >= 0.2)
        top = telemetry.loop_lag.quantile(1.0)
        assert top is not None
        assert top >= 0.5  # the late wake-up (0.29 s at least) is in the histogram too
    finally:
        probe.cancel()
