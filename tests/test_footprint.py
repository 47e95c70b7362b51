"""The idle stack's footprint: the processes that never run a graph themselves (the model
service and the trainer, which convert and train in child processes and serve through TF
Serving) do not load TensorFlow; the TF Serving stand-in, which runs the models, does.

Observed from the outside, as the running processes are: TensorFlow's shared library is mapped
into a process (`/proc/<pid>/maps`) exactly when the process imported `tensorflow`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(child) for child in children.read_text().split()]
    return pids


def loads_tensorflow(pid: int) -> bool:
    return any("libtensorflow" in Path(f"/proc/{each}/maps").read_text() for each in _tree(pid))


def test_only_the_serving_process_loads_tensorflow_while_the_stack_idles(stack, api):
    assert api(stack).get("/healthz").status_code == 200
    processes = stack.state()["processes"]
    assert not loads_tensorflow(processes["model"]), "the model service imported TensorFlow"
    assert not loads_tensorflow(processes["model-trainer"]), "the idle trainer imported TensorFlow"
    assert loads_tensorflow(processes["tfserving"])  # the check sees TensorFlow where it is
