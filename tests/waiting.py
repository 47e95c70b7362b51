"""Waiting for what the stack does in the background (a deleted project's data going, say):
polls a condition until it holds, bounded so a test that would hang fails instead."""
from __future__ import annotations

import time
from collections.abc import Callable

BACKGROUND_S = 60.0


def eventually(condition: Callable[[], object], what: str, timeout_s: float = BACKGROUND_S):
    """The first true value of `condition()`; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: still not so after {timeout_s:.0f} s"
        time.sleep(0.1)
