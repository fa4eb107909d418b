"""loadtest/resume_bench.py: the bench drives the client's ClientSync and measures as the
gateway codes (proto/spec.md §4.6)."""

from __future__ import annotations

import argparse
import random

import pytest

from gateway.content_coding import compress as gateway_compress
from loadtest import resume_bench
from loadtest.config import Target
from tests.conftest import RunningGateway


@pytest.mark.parametrize("coding", resume_bench.CODINGS)
def test_the_bench_compresses_as_the_resume_endpoint_does(coding: str) -> None:
    """The bench codes with the libraries directly (it imports no gateway module): the bytes
    must be the endpoint's, or its table would compare other levels than the gateway serves."""
    rng = random.Random(7)
    body = bytes(rng.choice(b"LT|0123456789-timeline") for _ in range(20_000))
    assert resume_bench.compress(body, coding) == gateway_compress(body, coding)
    assert len(resume_bench.compress(body, coding)) < len(body)


async def test_resume_against_the_gateway_catches_up_with_one_catch_up(
    gateway: RunningGateway,
) -> None:
    args = argparse.Namespace(history=5, churn=20, repeats=2)
    row = await resume_bench.measure("gateway", gateway.ws_url, Target.TIMELINE, 12, args)

    resumed, stepped = row["resume"], row["sync step 1"]
    # RESUME sends only the stored updates the reader missed; a step 1 diff also carries the
    # whole delete set (the churn): the catch-up is smaller, never larger.
    assert 0 < resumed["payload_bytes"] < stepped["payload_bytes"]
    assert resumed["message_bytes"] > resumed["payload_bytes"]  # the CATCH_UP's header
    assert len(resumed["payload_bytes_all"]) == 1  # every repeat got the same catch-up
    assert row["http"]["identity"]["bytes"] == stepped["payload_bytes"]
    for coding in resume_bench.CODINGS:
        assert row["http"][coding]["bytes"] == stepped["compressed_bytes"][coding]
