"""The sandbox's last step (`python -m model_service.training.script_runner <runner.json>`): loads
the training script and calls `train(data_dir, output_dir, params)`, inside the confinement that
`confine.py` set up. Inside bubblewrap started as root, it first becomes the unprivileged user
its spec names (`uid`, `gid`), before any of the script is read.

It tells the trainer what happens through events, one JSON object per line on an inherited pipe:
`progress` (from `params["report"](epoch, epochs, **metrics)`), then `done` with the metrics
`train` returned, or `error` with a `kind` (`load`, `no_train`, `crash`, `memory`, `cpu_limit`)
and a message for a person. Tracebacks go to stderr, which the trainer keeps as the training's
log. Nothing here trusts the script: the trainer checks the model file itself, and the events
are only the script's own account of its progress.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import traceback
from pathlib import Path

from .confine import EXIT_CONFINE_FAILED, drop_privileges

EXIT_SCRIPT_FAILED = 10
EXIT_NO_TRAIN = 11
EXIT_CPU_LIMIT = 12
EXIT_OUT_OF_MEMORY = 13
MAX_METRICS = 50
MAX_NAME = 64
MAX_MESSAGE = 2000


class Events:
    """Writes events to the trainer; a line never exceeds what a pipe writes at once."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, event: dict) -> None:
        line = (json.dumps(event, allow_nan=False) + "\n").encode()
        if len(line) <= 4096:
            try:
                os.write(self.fd, line)
            except OSError:
                pass  # the trainer stopped listening; it decides the outcome anyway


def clean_metrics(values) -> dict[str, float]:
    """The numeric, finite values of a metrics mapping, names shortened, at most MAX_METRICS."""
    if not isinstance(values, dict):
        return {}
    metrics = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars, tensors of one value
            except (TypeError, ValueError):
                continue
        if math.isfinite(value) and len(metrics) < MAX_METRICS:
            metrics[str(name)[:MAX_NAME]] = float(value)
    return metrics


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return _short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def make_report(events: Events):
    def report(epoch, epochs, **metrics) -> None:
        """Progress of the training: `epoch` of `epochs` done, with the latest metrics."""
        events.send({"event": "progress", "epoch": int(epoch), "epochs": int(epochs), "metrics": clean_metrics(metrics)})

    return report


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("training_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["training_script"] = module
    spec.loader.exec_module(module)
    return module


def _fail(events: Events, kind: str, message: str, code: int) -> int:
    traceback.print_exc()
    events.send({"event": "error", "kind": kind, "message": _short(message)})
    return code


def run(spec: dict, events: Events) -> int:
    try:
        module = load_script(Path(spec["script"]))
    except MemoryError as exc:
        return _fail(events, "memory", describe(exc), EXIT_OUT_OF_MEMORY)
    except BaseException as exc:  # noqa: BLE001 - whatever the script does is the script's failure
        return _fail(events, "load", describe(exc), EXIT_SCRIPT_FAILED)
    train = getattr(module, "train", None)
    if not callable(train):
        events.send({"event": "error", "kind": "no_train", "message": "the script defines no train(data_dir, output_dir, params) function"})
        return EXIT_NO_TRAIN
    params = {**spec["params"], "report": make_report(events)}
    try:
        result = train(spec["data_dir"], spec["output_dir"], params)
    except MemoryError as exc:
        return _fail(events, "memory", describe(exc), EXIT_OUT_OF_MEMORY)
    except SystemExit as exc:
        return _fail(events, "crash", f"the script exited (code {exc.code}) before train returned", EXIT_SCRIPT_FAILED)
    except BaseException as exc:  # noqa: BLE001
        return _fail(events, "crash", describe(exc), EXIT_SCRIPT_FAILED)
    events.send({"event": "done", "metrics": clean_metrics(result)})
    return 0


def _on_cpu_limit(events: Events):
    def handler(_signum, _frame):
        events.send({"event": "error", "kind": "cpu_limit", "message": "the CPU time limit was reached"})
        os._exit(EXIT_CPU_LIMIT)

    return handler


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        drop_privileges(spec.get("uid"), spec.get("gid"), bool(spec.get("require_unprivileged", True)))
    except BaseException:  # noqa: BLE001 - nothing of the script may run as root
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(EXIT_CONFINE_FAILED)  # the sandbox could not be set up
    # paths relative to the working directory (this process's current one) become absolute
    spec.update({key: os.path.abspath(spec[key]) for key in ("script", "data_dir", "output_dir")})
    events = Events(int(spec["events_fd"]))
    os.set_inheritable(events.fd, False)  # processes the script starts do not get the channel
    signal.signal(signal.SIGXCPU, _on_cpu_limit(events))
    sys.path.insert(0, str(Path(spec["script"]).parent))  # the script may import files next to it
    code = run(spec, events)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
