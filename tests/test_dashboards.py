"""deploy/grafana and deploy/prometheus/alerts.yml use only metrics a running node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, RunningGateway

DASHBOARD = ROOT / "deploy" / "grafana" / "wedsync-gateway.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bgateway_[a-z0-9_]+\b")
PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself (scrape health), not the gateway."""
WANTED_ALERTS = {
    "GatewayAckLatencyHigh",
    "GatewayEventLoopLag",
    "GatewayStoreDown",
    "GatewayBusDown",
    "GatewayRefusalSpike",
}
"""What issue 16 asks to alert on (ack p99, loop lag, store or bus down, refusal spikes)."""


async def exported(gateway: RunningGateway) -> set[str]:
    """Every sample name a node's /metrics has, before any client came (histograms included)."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        text = (await http.get("/metrics")).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def expressions(value: Any) -> list[str]:
    """Every ``expr`` string anywhere in a parsed dashboard or rule file."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "expr" and isinstance(v, str)]
        return found + [e for v in value.values() for e in expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in expressions(v)]
    return []


def rules() -> list[dict[str, Any]]:
    parsed = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in parsed["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_prometheus_rule_groups_with_what_an_operator_needs() -> None:
    found = rules()
    assert {rule["alert"] for rule in found} >= WANTED_ALERTS
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert METRIC.search(rule["expr"]), rule["alert"]


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "wedsync-gateway"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


async def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(
    gateway: RunningGateway,
) -> None:
    names = await exported(gateway)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used: dict[str, set[str]] = {
        DASHBOARD.name: {m for e in expressions(dashboard) for m in METRIC.findall(e)},
        ALERTS.name: {m for e in expressions(rules()) for m in METRIC.findall(e)},
    }
    for source, metrics in used.items():
        assert metrics, source
        missing = sorted(metrics - names - PROMETHEUS_OWN)
        assert not missing, f"{source} uses metrics no node exports: {missing}"


def test_an_unknown_metric_would_be_caught() -> None:
    """The check above can fail: a misspelt name is found by the same pattern."""
    assert METRIC.findall("rate(gateway_edit_ack_secondz_bucket[5m])") == [
        "gateway_edit_ack_secondz_bucket"
    ]
    assert Path(DASHBOARD).is_file()
