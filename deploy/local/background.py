"""`up`, `down` and `status`: the stack as a background process of its own.

`up` starts `python -m deploy.local.launcher run` in a new session, its output in
<data>/logs/stack.log, and returns once `run` has written <data>/stack.json (everything
healthy). `down` sends that process SIGTERM, so it stops its children as on Ctrl-C, and kills
what is left if it hangs. Both find the stack through <data>/stack.pid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import registry
from .config import StackConfig
from .preflight import busy_ports
from .processes import pid_alive, signal_group
from .state import read_state, running_pid

LOG_TAIL_LINES = 40


def _tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as log_file:
            log_file.seek(offset)
            lines = log_file.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def up(config: StackConfig, components: tuple[registry.Component, ...]) -> int:
    """Starts `run` detached (output in <data>/logs/stack.log) and returns once it is healthy."""
    pid = running_pid(config)
    if pid is not None:
        print(f"ML Studio already runs at {config.gateway_url} (pid {pid})")
        return 0
    problems = busy_ports(config, components)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.logs_dir / "stack.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.local.launcher", "run"],
            cwd=config.repo_root,
            env={**os.environ, "PYTHONPATH": config.pythonpath, "MLSTUDIO_DATA_DIR": str(config.data_dir)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    config.pid_file.write_text(str(process.pid))
    try:
        return _await_healthy(config, process, log_path, offset)
    except KeyboardInterrupt:
        _stop_launcher(config, process.pid)
        process.wait()
        return 130


def _await_healthy(config: StackConfig, process: subprocess.Popen, log_path: Path, offset: int) -> int:
    deadline = time.monotonic() + config.startup_timeout_s
    while True:
        state = read_state(config)
        if state is not None and state.get("pid") == process.pid:
            print(f"ML Studio is up: {state['url']} (logs in {log_path}; `make down` stops it)")
            return 0
        code = process.poll()
        if code is not None:
            print(f"the stack did not start (exit code {code}); the end of {log_path}:\n{_tail(log_path, offset)}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"the stack was not healthy within {config.startup_timeout_s:g} s; the end of {log_path}:\n{_tail(log_path, offset)}", file=sys.stderr)
            _stop_launcher(config, process.pid)
            process.wait()
            return 1
        time.sleep(0.2)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _stop_launcher(config: StackConfig, pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM to the launcher (it stops its children); if it hangs, SIGKILL it and them."""
    children = (read_state(config) or {}).get("processes", {})
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, grace_s):
        signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    for child in children.values():
        if pid_alive(child):
            signal_group(child, signal.SIGKILL)


def down(config: StackConfig, _components: tuple[registry.Component, ...]) -> int:
    """Stops the stack of this data directory; nothing to stop is fine."""
    pid = running_pid(config)
    if pid is None:
        print("ML Studio is not running")
        for path in (config.pid_file, config.state_file):
            path.unlink(missing_ok=True)
        return 0
    _stop_launcher(config, pid)
    for path in (config.pid_file, config.state_file):
        path.unlink(missing_ok=True)
    print("ML Studio stopped")
    return 0


def status(config: StackConfig, _components: tuple[registry.Component, ...]) -> int:
    pid = running_pid(config)
    if pid is None:
        print("ML Studio is not running")
        return 1
    state = read_state(config)
    if state is None or state.get("pid") != pid:
        print(f"ML Studio is starting (launcher pid {pid})")
        return 0
    print(f"ML Studio runs at {state['url']} (launcher pid {pid})")
    for name, child in state["processes"].items():
        print(f"  {name:<12} pid {child:<8} {'running' if pid_alive(child) else 'exited'}")
    return 0
