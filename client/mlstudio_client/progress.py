"""Progress of the API's long operations on the terminal: a rich progress bar when stderr is a
terminal, and otherwise (CI logs, pipes) one plain line each time the API's progress changes, so
a log shows it move. Only the API's own progress fields feed it."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class ProgressView:
    """`with ProgressView("video 3") as view: view.update(status, done, total)`."""

    def __init__(self, name: str, unit: str, stream=None):
        self.name, self.unit = name, unit
        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream)
        self.bar: Progress | None = None
        self.task = None
        self.last: tuple | None = None

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            # the metrics come last: on a narrow terminal they are cut, the bar is not
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                                TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[detail]}"), console=self.console)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.name, total=None, detail="")
        return self

    def update(self, status: str, done: int, total: int | None, detail: str = "") -> None:
        state = (status, done, total, detail)
        if state == self.last:
            return
        self.last = state
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.name} {status}", completed=done, total=total or None, detail=detail)
        else:
            of = f"/{total}" if total else ""
            print(f"{self.name} {status}: {done}{of} {self.unit}" + (f" ({detail})" if detail else ""), file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
