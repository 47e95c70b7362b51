"""Prometheus scraping in the deployments: every service and worker serves its metrics on the port
its settings name (compose and Kubernetes agree with the code's setting), Kubernetes pods carry
the prometheus.io annotations for that port, and the NetworkPolicies let Prometheus (namespace
`monitoring`) reach it while nothing outside does (Envoy's own stats too, on the gateway's
metrics port); locally each process has its metrics port."""
from __future__ import annotations

import pytest

from deploy.local import registry
from deploy.tests import inventory
from gateway import render as gw
from deploy.tests.test_deploy import APP_NAMES, OVERLAYS, Cluster, _objects, _pod_containers, compose, compose_text, rendered  # noqa: F401
from mlstudio.common.settings import ServiceSettings, describe

METRICS_PORT = 9464


def test_metrics_port_is_a_setting_of_every_service_and_worker():
    assert ("METRICS_PORT", "0", "port of the Prometheus metrics endpoint (GET /metrics); 0: none") in describe(ServiceSettings)


def test_compose_gives_every_process_its_metrics_port_and_publishes_none(compose):
    for name in APP_NAMES:
        environment = compose["services"][name]["environment"]
        assert str(environment["METRICS_PORT"]) == str(METRICS_PORT) and environment["METRICS_HOST"] == "0.0.0.0", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_app_pod_is_annotated_for_scraping_on_its_metrics_port(rendered, overlay):
    config = _objects(rendered[overlay], "ConfigMap")["mlstudio-config"]["data"]
    assert config["METRICS_PORT"] == str(METRICS_PORT) and config["METRICS_HOST"] == "0.0.0.0"
    deployments = _objects(rendered[overlay], "Deployment")
    for name in APP_NAMES:
        template = deployments[name]["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == str(METRICS_PORT) and annotations.get("prometheus.io/path") == "/metrics", name
        ports = {p.get("name"): p["containerPort"] for c in _pod_containers(deployments[name]) for p in c.get("ports", [])}
        assert ports.get("metrics") == METRICS_PORT, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_pod_is_annotated_for_envoys_own_stats(rendered, overlay):
    gateway = _objects(rendered[overlay], "Deployment")["gateway"]
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(gw.STATS_PORT), "prometheus.io/path": "/stats/prometheus"}
    ports = {p.get("name"): p["containerPort"] for c in _pod_containers(gateway) for p in c.get("ports", [])}
    assert ports["metrics"] == gw.STATS_PORT == METRICS_PORT
    cluster = Cluster(rendered[overlay])
    assert cluster.allows(cluster.external("monitoring", "prometheus"), cluster.pods["gateway"], gw.STATS_PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_prometheus_reaches_the_metrics_ports(rendered, overlay):
    cluster = Cluster(rendered[overlay])
    prometheus = cluster.external("monitoring", "prometheus")
    for name in APP_NAMES:
        pod = cluster.pods[name]
        assert cluster.allows(prometheus, pod, METRICS_PORT), f"prometheus -> {name}"
        assert not cluster.allows(cluster.external("elsewhere"), pod, METRICS_PORT), f"elsewhere -> {name}"
        assert not cluster.allows(cluster.pods["gateway"], pod, METRICS_PORT), f"gateway -> {name}"
    assert not cluster.allows(prometheus, cluster.pods["user"], 8080)


def test_every_local_service_and_worker_has_a_metrics_port():
    with_metrics = {component.name for component in registry.COMPONENTS if component.port_for("METRICS_PORT")}
    assert set(inventory.service_names()) | {"video-worker", "model-trainer"} <= with_metrics
