"""gRPC client helper: one channel per address, deadlines always, request ids forwarded,
peer failures turned back into domain errors, retries only for idempotent calls."""
from __future__ import annotations

import threading
import time

import grpc

from . import errors, logs

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

    def _call(self, method, request, *, idempotent: bool = False, deadline_s: float | None = None, attempts: int = 3):
        tries = attempts if idempotent else 1
        for attempt in range(1, tries + 1):
            try:
                return method(request, timeout=deadline_s or self.deadline_s, metadata=self._metadata())
            except grpc.RpcError as exc:
                retryable = exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < tries
                if not retryable:
                    raise errors.from_grpc_error(exc, self.peer) from None
                time.sleep(0.2 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _stream(self, method, request, *, deadline_s: float | None = None):
        try:
            yield from method(request, timeout=deadline_s or self.deadline_s, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc, self.peer) from None
