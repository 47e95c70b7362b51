"""gRPC client helper: one channel per address, deadlines always, request ids forwarded,
peer failures turned back into domain errors, retries only for idempotent calls.

A retry is for a peer that could not be reached (the transport said UNAVAILABLE), never for a
peer that answered "unavailable" itself (its own dependency is down: asking again at once only
multiplies the wait), and never past the deadline of the request the call is made for.
"""
from __future__ import annotations

import threading
import time

import grpc

from . import errors, logs
from .deadlines import NONE, Deadline

_channels: dict[str, grpc.Channel] = {}
_lock = threading.Lock()
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def channel(address: str) -> grpc.Channel:
    """The shared channel to `address` (host:port)."""
    with _lock:
        if address not in _channels:
            _channels[address] = grpc.insecure_channel(address, options=_OPTIONS)
        return _channels[address]


class Client:
    """Base of a typed client: `self._call(self.stub.Method, request)` does the rest."""

    peer = "peer"

    def __init__(self, address: str, stub_class, deadline_s: float):
        self.address = address
        self.stub = stub_class(channel(address))
        self.deadline_s = deadline_s

    def _metadata(self):
        rid = logs.request_id.get()
        return ((logs.REQUEST_ID_HEADER, rid),) if rid else ()

    def _call(self, method, request, *, idempotent: bool = False, deadline_s: float | None = None, attempts: int = 3,
              deadline: Deadline = NONE):
        tries = attempts if idempotent else 1
        for attempt in range(1, tries + 1):
            deadline.check(f"calling the {self.peer} service")
            try:
                return method(request, timeout=deadline.timeout(deadline_s or self.deadline_s), metadata=self._metadata())
            except grpc.RpcError as exc:
                pause = 0.2 * 2 ** (attempt - 1)
                unreachable = exc.code() == grpc.StatusCode.UNAVAILABLE and not errors.answered_code(exc)
                remaining = deadline.remaining()
                time_left = remaining is None or remaining > pause
                if not (unreachable and attempt < tries and time_left):
                    raise errors.from_grpc_error(exc, self.peer) from None
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _stream(self, method, request, *, deadline_s: float | None = None):
        try:
            yield from method(request, timeout=deadline_s or self.deadline_s, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc, self.peer) from None
