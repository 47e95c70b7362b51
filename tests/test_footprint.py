"""The idle stack's footprint: the processes that never run a graph themselves (the model
service and the trainer, which convert and train in child processes and serve through TF
Serving) do not load TensorFlow; the TF Serving stand-in, which runs the models, does, but not
Keras or h5py; the video service and its worker load OpenCV, the model service and the trainer
numpy, only when a request or a job needs it.

Observed from the outside, as the running processes are: a package's shared libraries are mapped
into a process (`/proc/<pid>/maps`) exactly when the process imported it. Keras itself is pure
Python; what it imports and TensorFlow does not (OpenCV, Matplotlib, Pillow, optree) has
libraries of its own, so their absence shows that Keras was not imported.
"""
from __future__ import annotations

import re
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


def mapped_packages(pid: int) -> set[str]:
    """The installed packages whose files (shared libraries) the process tree has mapped."""
    found = set()
    for each in _tree(pid):
        for line in Path(f"/proc/{each}/maps").read_text().splitlines():
            match = re.search(r"/site-packages/([^/]+)/", line)
            if match:
                found.add(match.group(1))
    return found


def test_only_the_serving_process_loads_tensorflow_while_the_stack_idles(stack, api):
    assert api(stack).get("/healthz").status_code == 200
    processes = stack.state()["processes"]
    assert not loads_tensorflow(processes["model"]), "the model service imported TensorFlow"
    assert not loads_tensorflow(processes["model-trainer"]), "the idle trainer imported TensorFlow"
    assert loads_tensorflow(processes["tfserving"])  # the check sees TensorFlow where it is


# Keras' own imports that TensorFlow alone does not make, and Keras' HDF5 reader.
KERAS_AND_HDF5 = {"cv2", "matplotlib", "PIL", "optree", "h5py"}


def test_idle_processes_leave_out_the_libraries_only_work_needs(private_stack, api):
    # A stack of its own: the shared one has split videos and answered predictions by now.
    stack = private_stack().start()
    assert api(stack).get("/healthz").status_code == 200
    processes = stack.state()["processes"]
    serving = mapped_packages(processes["tfserving"])
    assert "tensorflow" in serving  # the check sees packages where they are
    assert not serving & KERAS_AND_HDF5, f"the TF Serving stand-in imported {sorted(serving & KERAS_AND_HDF5)}"
    for name in ("video", "video-worker"):
        assert "cv2" not in mapped_packages(processes[name]), f"the idle {name} process imported OpenCV"
    for name in ("model", "model-trainer"):
        assert "numpy" not in mapped_packages(processes[name]), f"the idle {name} process imported numpy"
