"""Envoy's own metrics for Prometheus in compose and Kubernetes: the renderings have a `stats`
listener on the metrics port that serves GET /stats/prometheus of the admin interface and
nothing else of it (the admin port, which can also stop Envoy, stays on loopback). A real Envoy
runs the rendered config."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest
import requests
import yaml

from deploy.local.envoy import find_envoy
from gateway import render as gw


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("env", ["compose", "kubernetes"])
def test_compose_and_kubernetes_render_a_stats_listener_on_the_metrics_port(env):
    config = yaml.safe_load(gw.render(gw.preset(env)))
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    assert listeners["stats"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": gw.STATS_PORT}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_the_local_rendering_has_no_stats_listener():
    config = yaml.safe_load(gw.render(gw.preset("local")))
    assert [listener["name"] for listener in config["static_resources"]["listeners"]] == ["public"]


def test_the_stats_listener_serves_only_the_prometheus_stats(tmp_path):
    public, admin, stats, user = free_ports(4)
    config = gw.GatewayConfig(upstreams={"user": gw.Upstream("127.0.0.1", user)}, listen_port=public, admin_port=admin, stats_port=stats)
    path = tmp_path / "envoy.yaml"
    path.write_text(gw.render(config))
    envoy = subprocess.Popen([find_envoy(), "--config-path", str(path), "--disable-hot-restart", "--concurrency", "1",
                              "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{stats}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"{base}/stats/prometheus", timeout=5)
                if answer.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert envoy.poll() is None and time.monotonic() < deadline, "envoy did not serve its stats"
            time.sleep(0.2)
        assert "envoy_server_live" in answer.text and "envoy_http_downstream_rq_total" in answer.text
        assert requests.post(f"{base}/quitquitquit", timeout=5).status_code == 404
        assert requests.post(f"{base}/stats/prometheus", timeout=5).status_code == 404
        assert requests.get(f"{base}/config_dump", timeout=5).status_code == 404
        assert requests.get(f"{base}/stats/prometheus", timeout=5).status_code == 200 and envoy.poll() is None
    finally:
        envoy.terminate()
        envoy.wait(20)
