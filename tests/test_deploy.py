"""deploy/: the compose file, the Kubernetes manifests and the Prometheus scrape config agree with
the code — ports, probe paths, setting names, the image, and a grace period longer than the drain.

No Docker engine or cluster here: the files are parsed and checked, never run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTING_NAMES = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
DEFAULTS = Settings()
PRESTOP_SLEEP = 5


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


IMAGE = f"wedsync/gateway:{version()}"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                assert document["kind"] not in found, f"two {document['kind']}s"
                found[document["kind"]] = document
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def exposed_port() -> int:
    (port,) = re.findall(r"^EXPOSE (\d+)$", dockerfile(), flags=re.MULTILINE)
    return int(port)


def gateway_container() -> dict[str, Any]:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "gateway"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def gateways() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if n.startswith("gateway-")}


def seconds(environment: dict[str, Any], name: str) -> float:
    value = environment.get(f"GATEWAY_{name.upper()}")
    return float(value) if value is not None else float(getattr(DEFAULTS, name))


def duration(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, f"{text!r}: write compose durations in seconds"
    return float(match.group(1))


# -- Kubernetes -------------------------------------------------------------------------------


def test_every_kind_the_issue_asks_for_is_there() -> None:
    kinds = set(manifests())
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds


def test_the_probes_ask_the_gateways_health_endpoints_on_its_port() -> None:
    from gateway.app import create_app

    routes = {getattr(r, "path", None) for r in create_app(Settings()).http.routes}
    container = gateway_container()
    (port,) = container["ports"]
    assert port["containerPort"] == exposed_port() == DEFAULTS.port
    assert env_of(container)["GATEWAY_PORT"] == str(port["containerPort"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        target = container[probe]["httpGet"]
        assert target["path"] in routes
        assert target["port"] in (port["name"], port["containerPort"])
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] in routes


def test_the_grace_period_outlasts_the_prestop_and_the_whole_drain() -> None:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    container = gateway_container()
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP)]
    environment = env_of(container)
    drain = seconds(environment, "drain_seconds")
    spread = seconds(environment, "drain_spread_seconds")
    # Node.drain: flush (at most drain), spread, then the rooms' unload (at most drain)
    assert spec["terminationGracePeriodSeconds"] > PRESTOP_SLEEP + drain + spread + drain


def test_every_environment_variable_is_a_setting_of_the_gateway() -> None:
    container = gateway_container()
    named = set(env_of(container))
    for init in manifests()["Deployment"]["spec"]["template"]["spec"].get("initContainers", []):
        named |= set(env_of(init))
    secret = manifests()["Secret"]["stringData"]
    named |= set(secret)
    assert named - SETTING_NAMES == set()
    for service in compose()["services"].values():
        environment = service.get("environment") or {}
        gateway_names = {name for name in environment if name.startswith(PREFIX)}
        assert gateway_names - SETTING_NAMES == set()


def test_the_values_given_are_valid_settings() -> None:
    """What the manifests set passes the gateway's own checks (``gateway check-config``)."""
    environment = {k: v for k, v in env_of(gateway_container()).items() if v is not None}
    environment.update(manifests()["Secret"]["stringData"])
    Settings.from_env(environment)
    for service in gateways().values():
        Settings.from_env({k: str(v) for k, v in service["environment"].items()})


def test_the_image_is_the_one_the_dockerfile_builds_for_this_version() -> None:
    deployment = manifests()["Deployment"]["spec"]["template"]["spec"]
    for container in [*deployment["containers"], *deployment.get("initContainers", [])]:
        assert container["image"] == IMAGE
    assert re.search(r'^ENTRYPOINT \["gateway"\]$', dockerfile(), flags=re.MULTILINE)
    assert gateway_container()["args"] == ["serve"]
    (uid,) = re.findall(r"useradd --system --uid (\d+)", dockerfile())
    assert deployment["securityContext"]["runAsUser"] == int(uid)
    for name, service in compose()["services"].items():
        if name.startswith("gateway-") or name == "migrate":
            assert service["image"] == IMAGE
            assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (DEPLOY / ".." / "Dockerfile").resolve() == ROOT / "Dockerfile"


def test_the_service_pdb_hpa_and_policy_select_the_deployments_pods() -> None:
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert found["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (port,) = found["Service"]["spec"]["ports"]
    assert port["targetPort"] in ("http", exposed_port())
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == found["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2  # the PDB leaves one up during a disruption
    ingress_ports = {
        p["port"] for rule in found["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]
    }
    assert ingress_ports == {exposed_port()}


def test_the_hpa_scales_on_a_metric_the_gateway_exports_and_on_cpu() -> None:
    from gateway import metrics

    source = (ROOT / "gateway" / "metrics.py").read_text()
    metrics_named = set(re.findall(r'"(gateway_[a-z_]+)"', source))
    assert metrics.render  # the module the names come from
    hpa = manifests()["HorizontalPodAutoscaler"]["spec"]["metrics"]
    pods = [m["pods"]["metric"]["name"] for m in hpa if m["type"] == "Pods"]
    assert pods == ["gateway_connections"]
    assert set(pods) <= metrics_named
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa)
    adapter = yaml.safe_load(manifests()["ConfigMap"]["data"]["config.yaml"])
    served = {rule["name"]["as"] for rule in adapter["rules"]}
    assert set(pods) <= served  # the adapter serves what the HPA asks for
    for rule in adapter["rules"]:
        (series,) = re.findall(r"^(gateway_[a-z_]+)\{", rule["seriesQuery"])
        assert series in metrics_named
    requests = gateway_container()["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests)


# -- compose, the proxy and Prometheus ---------------------------------------------------------


def test_compose_runs_three_nodes_behind_a_websocket_proxy_with_redis_postgres_prometheus() -> None:
    services = compose()["services"]
    assert set(gateways()) == {"gateway-1", "gateway-2", "gateway-3"}
    assert {"proxy", "redis", "postgres", "prometheus", "migrate"} <= set(services)
    node_ids = {s["environment"]["GATEWAY_NODE_ID"] for s in gateways().values()}
    assert len(node_ids) == 3
    nginx = (DEPLOY / "nginx.conf").read_text()
    upstreams = set(re.findall(r"server (gateway-\d):(\d+)", nginx))
    assert upstreams == {(name, str(exposed_port())) for name in gateways()}
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx
    assert "proxy_set_header Connection $connection_upgrade;" in nginx
    assert "proxy_http_version 1.1;" in nginx
    for service in gateways().values():
        environment = service["environment"]
        assert environment["GATEWAY_PORT"] == str(exposed_port())
        assert environment["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in environment["GATEWAY_DATABASE_URL"]
        drain = seconds(environment, "drain_seconds")
        spread = seconds(environment, "drain_spread_seconds")
        assert duration(service["stop_grace_period"]) > drain + spread + drain
        assert "/readyz" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("target", ["gateway-1:8000", "gateway-2:8000", "gateway-3:8000"])
def test_prometheus_scrapes_every_node_on_its_metrics_path(target: str) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert target in targets
    assert targets == {f"{name}:{exposed_port()}" for name in gateways()}


def test_prometheus_loads_the_alert_rules_kept_next_to_it() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    mounted = {"/etc/prometheus/" + p.name for p in (DEPLOY / "prometheus").glob("*.yml")}
    (pattern,) = config["rule_files"]
    rules = {path for path in mounted if fnmatch.fnmatch(path, pattern)}
    assert rules == {"/etc/prometheus/alerts.yml"}
    (volume,) = compose()["services"]["prometheus"]["volumes"]
    assert volume == "./prometheus:/etc/prometheus:ro"
