"""The services' HTTP server (`runner.http_server`): a body reaches the app while it is still
being sent, the body limit is answered from Content-Length before the body is read, and the app
can see that its client hung up."""
from __future__ import annotations

import http.client
import socket
import threading

import pytest

from mlstudio.common import runner
from mlstudio.common.deadlines import CLIENT_DISCONNECTED

WAIT_S = 30  # a condition that never comes fails the test after this long
FIRST = 1 << 20


class Probe:
    """An app that reads the first MiB of its body, says so, then reads the rest; or that
    watches whether its client is still there."""

    def __init__(self):
        self.first_part_read = threading.Event()
        self.hung_up_seen = threading.Event()
        self.running = threading.Event()
        self.hung_up_before = None

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/watch":
            return self.watch(environ, start_response)
        stream = environ["wsgi.input"]
        received = len(stream.read(FIRST))
        self.first_part_read.set()
        while chunk := stream.read(1 << 20):
            received += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(received).encode()]

    def watch(self, environ, start_response):
        gone = environ[CLIENT_DISCONNECTED]
        self.hung_up_before = gone()
        self.running.set()
        for _ in range(WAIT_S * 20):
            if gone():
                self.hung_up_seen.set()
                break
            self.hung_up_seen.wait(0.05)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]


@pytest.fixture
def app():
    return Probe()


@pytest.fixture
def server(app):
    server = runner.http_server(app, host="127.0.0.1", port=0, threads=2, max_body_bytes=4 << 20)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(5)


def test_the_app_reads_a_body_while_it_is_still_being_sent(server, app):
    """The client holds back the second half until the app has read the first: a server that
    received the whole body before calling the app would never get there."""
    connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=WAIT_S)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("Content-Length", str(2 * FIRST))
        connection.endheaders()
        connection.send(b"x" * FIRST)
        assert app.first_part_read.wait(WAIT_S)
        connection.send(b"y" * FIRST)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, str(2 * FIRST).encode())
    finally:
        connection.close()


def test_a_body_over_the_limit_is_refused_before_it_is_read(server, app):
    """The answer comes from the announced length alone: no byte of the body is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=WAIT_S)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("Content-Length", str((4 << 20) + 1))
        connection.endheaders()
        assert connection.getresponse().status == 413
        assert not app.first_part_read.is_set()
    finally:
        connection.close()


def test_the_app_sees_its_client_hang_up(server, app):
    client = socket.create_connection(("127.0.0.1", server.effective_port), timeout=WAIT_S)
    client.sendall(b"GET /watch HTTP/1.1\r\nHost: test\r\n\r\n")
    assert app.running.wait(WAIT_S)
    assert app.hung_up_before is False
    client.close()
    assert app.hung_up_seen.wait(WAIT_S)
