"""Starts TF Serving for the local stack: the real `tensorflow_model_server` when it is on PATH,
else the stand-in, on the same flags.

The launcher runs `python -m tfserving_standin.launch` with TFSERVING_PORT and
TFSERVING_CONFIG_FILE in the environment. This creates an empty model config file when there is
none yet (the real server refuses to start without one; the model service rewrites it) and then
replaces itself with the chosen server, so signals reach the server directly.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import server_command

EMPTY_CONFIG = "model_config_list {\n}\n"


def main() -> None:
    port = int(os.environ.get("TFSERVING_PORT", "8500"))
    config_file = Path(os.environ.get("TFSERVING_CONFIG_FILE", "models.config")).resolve()
    config_file.parent.mkdir(parents=True, exist_ok=True)
    if not config_file.exists():
        config_file.write_text(EMPTY_CONFIG)
    command = server_command(port, str(config_file))
    print(f"starting TF Serving: {' '.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
