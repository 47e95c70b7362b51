"""The services' HTTP server (`runner.http_server`): bodies read in large socket reads, and the
body limit answered from Content-Length before the body is read."""
from __future__ import annotations

import http.client
import threading

import pytest
from waitress.channel import HTTPChannel

from mlstudio.common import runner


def counting_app(environ, start_response):
    received = 0
    while chunk := environ["wsgi.input"].read(1 << 20):
        received += len(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(received).encode()]


@pytest.fixture
def server():
    server = runner.http_server(counting_app, host="127.0.0.1", port=0, threads=2, max_body_bytes=4 << 20)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(5)


def post(server, size: int) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=30)
    try:
        connection.request("POST", "/", body=b"x" * size, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_body_is_received_in_large_socket_reads(server, monkeypatch):
    asked = []
    real_recv = HTTPChannel.recv
    monkeypatch.setattr(HTTPChannel, "recv", lambda self, size: asked.append(size) or real_recv(self, size))
    assert post(server, 3 << 20) == (200, str(3 << 20).encode())
    assert asked and min(asked) >= 256 * 1024  # waitress's default, 8 KiB, made uploads CPU-bound


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    """The answer comes from the announced length alone: no byte of the body is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=30)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("Content-Length", str((4 << 20) + 1))
        connection.endheaders()
        assert connection.getresponse().status == 413
    finally:
        connection.close()
