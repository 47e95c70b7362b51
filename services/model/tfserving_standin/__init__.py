"""A local STAND-IN for TensorFlow Serving, for machines without `tensorflow_model_server`.

The real server is not installable from PyPI, Debian or npm, and this machine has no container
engine; so that the one-machine stack runs anyway, this package implements the part of TF
Serving's gRPC API the model service uses (`PredictionService.Predict`, `GetModelMetadata`,
`ModelService.GetModelStatus`, `HandleReloadConfigRequest`) over the same model config file and
`<base>/<name>/<version>/` repository layout, loading each SavedModel version once with
TensorFlow. It is not a replacement: no batching scheduler, no REST API, no monitoring.
Wherever the real server is on PATH, `server_command` picks it instead.

This module imports nothing heavy, so a launcher can ask for the command cheaply.
"""
from __future__ import annotations

import shutil
import sys

REAL_SERVER = "tensorflow_model_server"


def server_command(port: int, model_config_file: str, *, file_system_poll_wait_seconds: int = 1, python: str = sys.executable,
                   grpc_socket_path: str = "") -> list[str]:
    """The command that starts TF Serving on `port` (and on the unix socket `grpc_socket_path`,
    when given): the real server if it is on PATH, else the stand-in (same flags)."""
    flags = [
        f"--port={port}",
        *([f"--grpc_socket_path={grpc_socket_path}"] if grpc_socket_path else []),
        f"--model_config_file={model_config_file}",
        f"--file_system_poll_wait_seconds={file_system_poll_wait_seconds}",
        # The model service loaded every SavedModel once already; a failure is final, so say so
        # at once instead of retrying for minutes while the upload waits.
        "--max_num_load_retries=0",
    ]
    real = shutil.which(REAL_SERVER)
    if real:
        return [real, *flags]
    return [python, "-m", "tfserving_standin", *flags]
