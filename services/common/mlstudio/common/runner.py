"""Runs a service: its gRPC server and its HTTP app under a production WSGI server (waitress)
in one process, stopping both gracefully on SIGTERM or Ctrl-C."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

import grpc
import waitress

log = logging.getLogger(__name__)

# Bytes per socket read: memory per connection stays this small, whatever the body's size.
RECV_BYTES = 256 * 1024


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


def http_server(app, *, host: str, port: int, threads: int = 8, max_body_bytes: int = 1 << 30):
    """The waitress server of `app` (not yet running). A body over `max_body_bytes` is answered
    413 from its Content-Length, before it is read."""
    return waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        max_request_body_size=max_body_bytes,
        # Waitress receives a body into its buffer before the app runs; at its default of 8 KiB
        # per socket read, that loop was most of an upload's CPU (py-spy: 57% of the video
        # service's samples for a 500 MB upload). Larger reads cost a few Python calls per MB.
        recv_bytes=RECV_BYTES,
        clear_untrusted_proxy_headers=True,
        # Keeps reading the connection while a request runs, so that a client that hung up is
        # seen (`waitress.client_disconnected`, see deadlines.Deadline.of_wsgi).
        channel_request_lookahead=1,
        ident="mlstudio",
    )


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
