"""`footprint`: the resident memory of the whole stack while it idles after its start (every
process the launcher started, with their children: MongoDB, Envoy, each service and worker, the
TF Serving stand-in under bubblewrap). Goal: `idle_rss_mb <= 1500`.

A full run measures it first, before any scenario has made the processes grow. It waits until
the stack has been quiet (under 5% of a core for a second, at most 60 s), then reads each
process's VmRSS. `rss_mb` has the figure of each process (with its children) and
`tensorflow_loaded` the processes that have TensorFlow's library mapped.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, rss_bytes

MB = 1_000_000
GOAL_MB = 1500.0
QUIET_CPU_S = 0.05  # per second, whole stack
SETTLE_TIMEOUT_S = 60.0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += rss_bytes(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def _maps_tensorflow(pid: int) -> bool:
    try:
        return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def settle(context: Context) -> float:
    """Waits until the stack is quiet; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        with CpuMeter(context.stack.pids()) as cpu:
            time.sleep(1.0)
        if sum(seconds for name, seconds in cpu.used.items() if name != "bench") < QUIET_CPU_S:
            break
    return time.monotonic() - started


def run(context: Context) -> dict:
    waited = settle(context)
    trees = {name: tree(pid) for name, pid in context.stack.pids().items()}
    rss_mb = {name: _rss(pids) / MB for name, pids in sorted(trees.items())}
    total = sum(rss_mb.values())
    goals = [goal(f"idle_rss_mb <= {GOAL_MB:g}", total, GOAL_MB, at_least=False)]
    return {
        "idle_rss_mb": total,
        "rss_mb": dict(sorted(rss_mb.items(), key=lambda item: -item[1])),
        "tensorflow_loaded": sorted(name for name, pids in trees.items() if any(_maps_tensorflow(pid) for pid in pids)),
        "settled_after_s": waited,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {},
    }
