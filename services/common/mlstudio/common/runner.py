"""Runs a service: its gRPC server and its HTTP app under a production WSGI server (cheroot)
in one process, stopping both gracefully on SIGTERM or Ctrl-C.

cheroot hands the app a request body as it arrives: an upload is parsed and spooled to disk while
it is still being received, in one pass, and memory stays flat whatever its size. (waitress, used
before, received every body into a buffer file of its own before the app saw a byte: a video was
written once more and its parsing could only start once the upload had ended.) cheroot also keeps
idle keep-alive connections off its worker threads, and runs in the service's own process, so the
gRPC server, the job threads and the HTTP app share one start-up.
"""
from __future__ import annotations

import logging
import select
import signal
import threading
import time
from collections.abc import Callable

import grpc
from cheroot import wsgi

from .deadlines import CLIENT_DISCONNECTED

log = logging.getLogger(__name__)

# Seconds a connection may stay silent mid-request or idle between requests (Envoy keeps its
# upstream connections open and opens a new one when the server has closed one).
CONNECTION_TIMEOUT_S = 120


def serve(app, *, host: str, http_port: int, grpc_server: grpc.Server | None = None, grpc_port: int | None = None, threads: int = 8, max_body_bytes: int = 1 << 30, grace_s: float = 5.0, background: list[threading.Thread] | None = None) -> None:
    """Blocks until SIGTERM/SIGINT, then stops gRPC with a grace period and exits."""
    http = http_server(app, host=host, port=http_port, threads=threads, max_body_bytes=max_body_bytes)
    if grpc_server is not None:
        grpc_server.start()
    for thread in background or ():
        thread.start()
    log.info("serving", extra={"http": f"{host}:{http_port}", "grpc_port": grpc_port})

    def stop(signum, _frame):
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        if grpc_server is not None:
            grpc_server.stop(grace_s).wait(grace_s)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        http.run()
    finally:
        http.close()


class HttpServer:
    """The HTTP server of one app, bound at creation (`effective_port`), serving in `run()` until
    `close()`."""

    def __init__(self, server: wsgi.Server):
        self._server = server
        server.prepare()
        self.effective_port: int = server.bind_addr[1]

    def run(self) -> None:
        self._server.serve()

    def close(self) -> None:
        self._server.stop()


def http_server(app, *, host: str, port: int, threads: int = 8, max_body_bytes: int = 1 << 30) -> HttpServer:
    """The HTTP server of `app` (bound, not yet serving). A body over `max_body_bytes` is answered
    413 from its Content-Length, before it is read."""
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="mlstudio", timeout=CONNECTION_TIMEOUT_S)
    server.gateway = _Gateway
    server.max_request_body_size = max_body_bytes
    server.error_log = _log_server_error
    return HttpServer(server)


def _log_server_error(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own messages (a broken connection, an error answering), into the service's log."""
    log.log(level, "http server: %s", msg, exc_info=traceback)


class _Gateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, which also tells the app how to see that its client hung up
    (`deadlines.CLIENT_DISCONNECTED`)."""

    def get_environ(self):
        environ = super().get_environ()
        connection = self.req.conn.socket
        environ[CLIENT_DISCONNECTED] = lambda: _hung_up(connection)
        return environ


def _hung_up(connection) -> bool:
    """Whether the peer of `connection` closed it (or it broke); never blocks. Behind Envoy, a
    client that leaves makes Envoy reset the request, which closes this connection."""
    poller = select.poll()
    poller.register(connection, select.POLLIN | select.POLLRDHUP)
    try:
        events = poller.poll(0)
    except (OSError, ValueError):  # closed under us
        return True
    return any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, mask in events)


def periodic(name: str, period_s: float, task: Callable[[], object]) -> threading.Thread:
    """A daemon thread (start it with `serve(background=...)`) that runs `task` every `period_s`
    seconds; a failure is logged and the next round comes anyway (retry sweeps, clean-ups)."""
    def loop():
        while True:
            time.sleep(period_s)
            try:
                task()
            except Exception:  # noqa: BLE001 - keep going; the failure is logged
                log.exception("%s failed", name)

    return threading.Thread(target=loop, daemon=True, name=name)
