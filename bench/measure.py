"""How the benchmarks measure: repeated runs summarised by their median, latency percentiles, the
resident memory of a process sampled while it works, and the state of the machine.

The median of several runs is the headline figure: this machine is shared, and the median
ignores a run that other work slowed down, without picking the one run that was lucky (a video
that happened to arrive just as the worker looked for work, say). Every run's time is kept in
the results too.
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


@dataclass
class Runs:
    """The durations (seconds) of repeated runs of one measurement."""

    seconds: list[float] = field(default_factory=list)

    def time(self, action: Callable[..., object], *args) -> object:
        """`action(*args)`, timed; its result."""
        started = time.perf_counter()
        result = action(*args)
        self.seconds.append(time.perf_counter() - started)
        return result

    @property
    def median(self) -> float:
        return median_of(self.seconds)

    def rounded(self) -> list[float]:
        return [round(value, 4) for value in self.seconds]


def median_of(values: list, key=None):
    """The middle value (the upper one of an even count, so it is always a measured run)."""
    return sorted(values, key=key)[len(values) // 2]


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (nearest rank, as latency reports usually give)."""
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the ratios of runs made one after the other: a burst of other work on the
    machine slows both runs of a pair, so it cancels out of that pair's ratio."""
    return median_of([top / bottom for top, bottom in zip(numerators, denominators, strict=True)])


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS line")


class RssSampler:
    """Samples a process's VmRSS every `period_s` in a thread, between `with` and its end."""

    def __init__(self, pid: int, period_s: float = 0.02):
        self.pid = pid
        self.period_s = period_s
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"rss-{pid}", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            self._take()

    def _take(self) -> None:
        self.peak = max(self.peak, rss_bytes(self.pid))
        self.samples += 1

    def __enter__(self) -> Self:
        self.baseline = self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    @property
    def growth_bytes(self) -> int:
        return self.peak - self.baseline


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process used between `with` and its end: where the time went, by process
    (this benchmark's own process is `bench`, the client side)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = {**pids, "bench": os.getpid()}
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        found = {}
        for name, pid in self.pids.items():
            try:
                found[name] = cpu_seconds(pid)
            except (OSError, ValueError):
                continue  # gone (stopped or restarted): counted as nothing
        return found

    def __enter__(self) -> Self:
        self._start = self._now()
        return self

    def __exit__(self, *exc_info) -> None:
        end = self._now()
        self.used = {name: end[name] - self._start[name] for name in end if name in self._start}


def mean_cpu(meters: list[CpuMeter]) -> dict[str, float]:
    """CPU seconds per process, averaged over runs, busiest first (idle processes left out)."""
    names = {name for meter in meters for name in meter.used}
    average = {name: sum(meter.used.get(name, 0.0) for meter in meters) / len(meters) for name in names}
    return dict(
        sorted(
            ((name, round(value, 3)) for name, value in average.items() if value >= 0.005), key=lambda item: -item[1]
        )
    )


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(value, 2) for value in os.getloadavg()],
    }
