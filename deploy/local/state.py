"""Where a running stack is recorded: <data>/stack.pid (the launcher's pid, from the start)
and <data>/stack.json (written once everything is healthy: pid, URL, ports, processes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .config import StackConfig
from .processes import pid_alive


def running_pid(config: StackConfig) -> int | None:
    """The pid of the launcher running the stack of this data directory, if any."""
    try:
        pid = int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"deploy.local.launcher" in argv else None


def read_state(config: StackConfig) -> dict | None:
    try:
        return json.loads(config.state_file.read_text())
    except (OSError, ValueError):
        return None


def write_state(config: StackConfig, state: dict) -> None:
    tmp = config.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(config.state_file)


def remove_own_files(config: StackConfig) -> None:
    for path in (config.state_file, config.pid_file):
        try:
            if path == config.pid_file and path.read_text().strip() != str(os.getpid()):
                continue
            path.unlink()
        except (OSError, ValueError):
            pass
