"""Runs the exporter (`model_service.exporter`) in a child process and reads its verdict.

The child gets a time limit and an environment without the service's credentials (no database
URI, storage keys or signing key): it only reads the uploaded file and writes a SavedModel.
A semaphore bounds how many conversions run at once (each loads TensorFlow and a model).
The exporter's verdict is the one way its texts (TensorFlow's, Keras's, the OS's errors) reach
users, so it is where server paths are taken out of them.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import mlstudio
from mlstudio.common import errors

from .exporter import EXIT_UNUSABLE
from .user_messages import without_paths

log = logging.getLogger(__name__)
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class Conversion:
    """A converted model: the SavedModel directory and what the exporter learnt."""

    saved_model: Path
    input_shape: list[int]
    output_size: int | None


def _child_env() -> dict[str, str]:
    service_root = Path(__file__).resolve().parents[1]
    common_root = Path(mlstudio.__path__[0]).resolve().parent
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(service_root), str(common_root)])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


class SubprocessConverter:
    def __init__(self, *, timeout_s: float = 600.0, dynamic_size: int = 512, max_unzipped_bytes: int = 2 << 30,
                 concurrency: int = 1, python: str = sys.executable):
        self.timeout_s = timeout_s
        self.dynamic_size = dynamic_size
        self.max_unzipped_bytes = max_unzipped_bytes
        self.python = python
        self._slots = threading.BoundedSemaphore(max(1, concurrency))

    def convert(self, source: Path, fmt: str, model_type: str, preprocessing: str, work_dir: Path) -> Conversion:
        """Exports `source` into `work_dir/saved_model`; 422 with the reason when it cannot."""
        output = work_dir / "saved_model"
        result_file = work_dir / "result.json"
        command = [
            self.python, "-m", "model_service.exporter",
            "--source", str(source), "--format", fmt, "--type", model_type,
            "--preprocessing", preprocessing, "--dynamic-size", str(self.dynamic_size),
            "--max-unzipped-bytes", str(self.max_unzipped_bytes),
            "--output", str(output), "--result", str(result_file),
        ]
        with self._slots:
            try:
                finished = subprocess.run(command, cwd=work_dir, env=_child_env(), capture_output=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise errors.Unprocessable(f"converting the model took longer than {self.timeout_s:.0f} s", code="bad_model_file") from None
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            log.error("model exporter died (exit %s): %s", finished.returncode, finished.stderr.decode(errors="replace")[-2000:])
            raise errors.Unprocessable("the model file made the converter crash; it is not a usable model", code="bad_model_file") from None
        if "error" in result:
            if finished.returncode != EXIT_UNUSABLE:
                log.error("model exporter failed: %s\n%s", result["error"], finished.stderr.decode(errors="replace")[-2000:])
                raise errors.DomainError("converting the model failed on the server")
            raise errors.Unprocessable(without_paths(result["error"]), code="bad_model_file")
        return Conversion(output, list(result["input_shape"]), result["output_size"])
