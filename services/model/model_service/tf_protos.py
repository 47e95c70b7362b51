"""TensorFlow's and TF Serving's protobuf messages, without importing TensorFlow.

The model service and the trainer speak TF Serving's gRPC API (`tensorflow_serving.apis`) and
read SavedModel graphs, which takes only the generated `*_pb2` modules under `tensorflow.core`.
But importing any of them runs `tensorflow/__init__.py` first, which loads the whole of
TensorFlow and Keras: about 570 MB resident and seconds of CPU in a process that never runs a
graph (models run in TF Serving; conversions and trainings in child processes).

`load` imports the messages with a stand-in for the `tensorflow` package: the module the import
system would make for it (same location, so its submodules are found where they are), not run.
The stand-in is taken out of `sys.modules` right after, so a later `import tensorflow` (a tool
that needs it for real) runs the real package, which then finds these message modules already
loaded: one copy of each, as TensorFlow itself would have. The one difference: the real package
then has no `core` attribute (it binds the attribute only to submodules it loads itself); nothing
here reaches the messages through it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_lock = threading.Lock()


def load(*names: str) -> list[ModuleType]:
    """The modules named (`tensorflow.core...`, `tensorflow_serving.apis...`), imported without
    running TensorFlow's package initialisation unless TensorFlow is already imported."""
    with _lock:
        if "tensorflow" in sys.modules:
            return [importlib.import_module(name) for name in names]
        spec = importlib.util.find_spec("tensorflow")
        if spec is None:
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
        stand_in = importlib.util.module_from_spec(spec)
        sys.modules["tensorflow"] = stand_in
        try:
            return [importlib.import_module(name) for name in names]
        finally:
            if sys.modules.get("tensorflow") is stand_in:
                del sys.modules["tensorflow"]
