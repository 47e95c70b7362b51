"""A request's deadline, carried from the door it came in through to every call it makes.

Work done for a caller that has gone (it disconnected, or its deadline passed) is wasted at best
and harmful at worst: a prediction stored after its client left files images nobody sees the
answer for, and a retry after the deadline keeps a dependency busy for nothing. So each request
that may take long gets one `Deadline`: the HTTP adapter builds it from a setting and the WSGI
server's "client disconnected" probe, the gRPC adapter from the call's own deadline and
`context.is_active()`. Business code asks `left()` before a step that writes, passes
`timeout(longest)` to the calls it makes, and never knows which door the request came through.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from . import errors

# The WSGI environ key of the server's "has the client hung up?" probe (`runner` sets it).
CLIENT_DISCONNECTED = "mlstudio.client_disconnected"


def _never() -> bool:
    return False


class Deadline:
    """When the caller stops waiting (`seconds` from now; None: never) and how to tell that it
    already left (`gone()` is true once the client disconnected or cancelled)."""

    def __init__(self, seconds: float | None = None, *, gone: Callable[[], bool] = _never,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._at = None if seconds is None else clock() + seconds
        self._gone = gone

    @classmethod
    def of_wsgi(cls, environ, seconds: float | None) -> Deadline:
        """`seconds` from now for the HTTP request of `environ`, gone once its client hung up.

        The services' server (`runner`) puts its probe at `CLIENT_DISCONNECTED`; under another
        server, the deadline alone."""
        return cls(seconds, gone=environ.get(CLIENT_DISCONNECTED) or _never)

    @classmethod
    def of_grpc(cls, context) -> Deadline:
        """The deadline of the gRPC call behind `context` (a servicer's context)."""
        return cls(context.time_remaining(), gone=lambda: not context.is_active())

    def remaining(self) -> float | None:
        """Seconds left (never below 0), None without a deadline."""
        return None if self._at is None else max(0.0, self._at - self._clock())

    def timeout(self, longest: float) -> float:
        """The timeout of one call made for this request: `longest`, or less when the deadline
        comes first."""
        remaining = self.remaining()
        return longest if remaining is None else min(longest, remaining)

    def left(self) -> str:
        """Why the caller is no longer waiting ('' while it is)."""
        if self._gone():
            return "the client disconnected"
        if self._at is not None and self._clock() >= self._at:
            return "its deadline passed"
        return ""

    def check(self, doing: str) -> None:
        """Raises DeadlineExceeded, naming `doing`, once the caller is no longer waiting."""
        why = self.left()
        if why:
            raise errors.DeadlineExceeded(f"stopped before {doing}: {why}")


NONE = Deadline()  # for callers that set no deadline (background work, tests)
