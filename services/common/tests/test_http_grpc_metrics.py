"""Request and call metrics of the shared HTTP app and gRPC server: HTTP requests counted by route
template (never the raw path) and status, gRPC calls by method and status code, and the metrics
endpoint on its own port."""
from __future__ import annotations

import grpc
import pytest
import requests
from flask_restx import Namespace, Resource
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from mlstudio.common import errors, grpc_server, http_app, metrics


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def client():
    app, api = http_app.make_app("things", title="t", description="d", readiness={})
    ns = Namespace("things", path="/things")

    @ns.route("/<int:thing_id>")
    class Thing(Resource):
        def get(self, thing_id):
            if thing_id == 404:
                raise errors.NotFound("no such thing")
            return {"id": thing_id}

    api.add_namespace(ns)
    return app.test_client()


def test_http_requests_are_counted_by_route_template_and_status(client):
    route = "/things/<int:thing_id>"
    ok, missing = value("mlstudio_http_requests_total", route=route, method="GET", status="200"), \
        value("mlstudio_http_requests_total", route=route, method="GET", status="404")
    unmatched = value("mlstudio_http_requests_total", route=metrics.UNMATCHED_ROUTE, method="GET", status="404")
    timed = value("mlstudio_http_request_duration_seconds_count", route=route, method="GET")
    for thing in (1, 2, 3):
        assert client.get(f"/things/{thing}").status_code == 200
    assert client.get("/things/404").status_code == 404
    assert client.get("/nowhere/at/all").status_code == 404
    assert value("mlstudio_http_requests_total", route=route, method="GET", status="200") - ok == 3
    assert value("mlstudio_http_requests_total", route=route, method="GET", status="404") - missing == 1
    assert value("mlstudio_http_requests_total", route=metrics.UNMATCHED_ROUTE, method="GET", status="404") - unmatched == 1
    assert value("mlstudio_http_request_duration_seconds_count", route=route, method="GET") - timed == 4
    assert value("mlstudio_http_requests_total", route="/things/1", method="GET", status="200") == 0  # no raw paths


def test_grpc_calls_are_counted_by_method_and_status_code():
    server, port, health = grpc_server.build_server(0, [])
    server.start()
    method = "/grpc.health.v1.Health/Check"
    ok = value("mlstudio_grpc_server_handled_total", method=method, code="OK")
    not_found = value("mlstudio_grpc_server_handled_total", method=method, code="NOT_FOUND")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(None)
    assert value("mlstudio_grpc_server_handled_total", method=method, code="OK") - ok == 1
    assert value("mlstudio_grpc_server_handled_total", method=method, code="NOT_FOUND") - not_found == 1
    assert value("mlstudio_grpc_server_handling_seconds_count", method=method) >= 2


def test_the_metrics_endpoint_serves_on_its_own_port_and_none_on_port_zero():
    assert metrics.serve("127.0.0.1", 0) is None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert metrics.serve("127.0.0.1", port) == port
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "# TYPE mlstudio_http_requests_total counter" in body and "process_cpu_seconds_total" in body
