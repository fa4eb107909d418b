"""gateway/metrics.py: /metrics explains latency — histograms, closes, refusals, platforms."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from gateway.telemetry import PHASE_SAMPLE_EVERY
from gateway_client import GatewayClient
from tests.conftest import RunningGateway
from tests.helpers import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: RunningGateway) -> Samples:
    """Every sample of the node's /metrics, by name and labels."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/metrics")
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def test_every_acknowledged_edit_is_timed_from_receipt_to_broadcast_and_to_ack(
    gateway: RunningGateway,
) -> None:
    async with GatewayClient(gateway.ws_url, "timed", platform="ios") as client:
        await client.wait_synced()
        await client.wait_durable(client.create_wedding("Ana Silva", "Bea Costa"))
        for i in range(PHASE_SAMPLE_EVERY):
            await client.wait_durable(client.set_core(notes=f"note {i}"))
        samples = await scrape(gateway)
    edits = 1 + PHASE_SAMPLE_EVERY
    assert value(samples, "gateway_edit_ack_seconds_count") >= edits
    assert value(samples, "gateway_edit_broadcast_seconds_count") >= edits
    assert value(samples, "gateway_edit_ack_seconds_bucket", le="+Inf") >= edits
    for phase in ("guard", "apply", "enforce"):  # sampled: the room's 1st and 17th update
        assert value(samples, "gateway_update_phase_seconds_count", phase=phase) == 2
    assert value(samples, "gateway_store_commit_seconds_count") >= 1
    assert value(samples, "gateway_store_batch_appends_sum") >= edits  # every append, batched
    assert value(samples, "gateway_event_loop_lag_seconds_count") >= 0  # exported from the start
    assert value(samples, "gateway_connections_by_platform", platform="ios") == 1
    assert value(samples, "gateway_connections_by_platform", platform="web") == 0


async def test_a_refused_change_is_counted_by_area_and_reason(gateway: RunningGateway) -> None:
    async with GatewayClient(gateway.ws_url, "refused") as client:
        await client.wait_synced()
        await client.wait_durable(client.create_wedding("Ana Silva", "Bea Costa"))
        await client.wait_durable(client.set_core(guest_count=99_999))  # over 5000: the schema
        samples = await scrape(gateway)
    assert value(samples, "gateway_refusals_total", area="core", reason="schema") == 1
    assert value(samples, "gateway_changes_refused_total") == 1


async def test_closes_are_counted_by_code_and_an_undeclared_platform_as_unknown(
    gateway: RunningGateway,
) -> None:
    async with connect(f"{gateway.ws_url}/closing?platform=toaster") as ws:
        await ws.recv()  # the server's sync step 1: joined
        await eventually(
            lambda: gateway.node.telemetry.platforms["unknown"] == 1,
            message="the connection is counted as unknown",
        )
        samples = await scrape(gateway)
        assert value(samples, "gateway_connections_by_platform", platform="unknown") == 1
        await ws.send("text frames are a protocol error")  # closed with 4500
        await ws.wait_closed()
    await eventually(lambda: gateway.node.telemetry.closes.get("4500") == 1)
    samples = await scrape(gateway)
    assert value(samples, "gateway_connections_closed_total", code="4500") == 1
    assert value(samples, "gateway_connections_by_platform", platform="unknown") == 0
    assert value(samples, "gateway_slow_client_closes_total") == 0


async def test_rooms_are_exported_by_state(gateway: RunningGateway) -> None:
    async with GatewayClient(gateway.ws_url, "stateful") as client:
        await client.wait_synced()
        samples = await scrape(gateway)
    assert value(samples, "gateway_rooms_by_state", state="serving") == 1
    assert value(samples, "gateway_rooms_by_state", state="loading") == 0
    assert value(samples, "gateway_repairs_total") == 0


async def test_a_mux_socket_counts_once_by_its_platform_and_its_close(
    gateway: RunningGateway,
) -> None:
    telemetry = gateway.node.telemetry
    async with connect(f"ws://127.0.0.1:{gateway.port}/mux?platform=android"):
        await eventually(lambda: telemetry.platforms["android"] == 1, message="counted")
        samples = await scrape(gateway)
        assert value(samples, "gateway_connections_by_platform", platform="android") == 1
    await eventually(lambda: telemetry.platforms["android"] == 0, message="uncounted")
    await eventually(lambda: telemetry.closes["1000"] == 1, message="its close counted")
