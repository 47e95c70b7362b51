"""Where the time goes inside the stack while a scenario runs (`python -m bench --profile`).

Each of the stack's Python processes is sampled with py-spy (100 Hz, without pausing it, idle
threads left out) for the whole scenario; the collapsed stacks are kept in
bench/work/profiles/<scenario>/<process>.txt and summarised in summary.txt: for each process,
how many busy samples it had and which functions they were in (self: the innermost Python
frame, which includes the C code it called; inclusive: anywhere on the stack).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

PYTHON_PROCESSES = ("user", "project", "image", "tfserving", "model", "video", "video-worker")
TOP = 12


class StackProfiler:
    """py-spy on every Python process of the stack, between `with` and its end."""

    def __init__(self, pids: dict[str, int], directory: Path, rate: int = 100):
        self.pids = {name: pid for name, pid in pids.items() if name in PYTHON_PROCESSES}
        self.directory = directory
        self.rate = rate
        self._spies: list[subprocess.Popen] = []

    def __enter__(self) -> Self:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            command = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(self.rate),
                "--nonblocking",
                # TF Serving's pid is bwrap's (it runs confined); the Python server is its child.
                "--subprocesses",
                "--output",
                str(self.directory / f"{name}.txt"),
            ]
            self._spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc_info) -> None:
        for spy in self._spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for spy in self._spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        (self.directory / "summary.txt").write_text(summarise(self.directory))


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) of each line of a py-spy raw file."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """`function (file.py:line)` with the line number dropped, so a function's lines add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(directory: Path) -> str:
    lines = []
    for path in sorted(directory.glob("*.txt")):
        if path.name == "summary.txt":
            continue
        stacks = read_collapsed(path)
        total = sum(count for _, count in stacks)
        lines.append(f"== {path.stem}: {total} busy samples")
        if not total:
            continue
        own, anywhere = collections.Counter(), collections.Counter()
        for frames, count in stacks:
            own[_short(frames[-1])] += count
            for frame in {_short(frame) for frame in frames}:
                anywhere[frame] += count
        lines.append("   self:")
        lines += [f"   {count / total:6.1%}  {frame}" for frame, count in own.most_common(TOP)]
        lines.append("   inclusive:")
        lines += [f"   {count / total:6.1%}  {frame}" for frame, count in anywhere.most_common(TOP * 2)]
    return "\n".join(lines) + "\n"
