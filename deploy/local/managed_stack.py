"""A local stack started and stopped from Python, for the integration tests and the benchmarks:
the real launcher (`python -m deploy.local.launcher run`) on free random ports with a data
directory of its own, so several stacks can share a machine."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from deploy.local import config as stack_config
from deploy.local import mongo as stack_mongo
from deploy.local import registry
from deploy.local.processes import pid_alive, signal_group, tied_to_parent

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
# How long a test request may take before it counts as hung: generous, because a busy machine
# (the tests share it with other runs) can take tens of seconds for a first prediction. A bound
# against a hang, never an expectation of speed.
REQUEST_TIMEOUT_S = 300.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _pythonpath() -> str:
    services = REPO_ROOT / "services"
    paths = [REPO_ROOT, services / "common", *sorted(p for p in services.iterdir() if p.is_dir() and p.name != "common")]
    return os.pathsep.join(str(p) for p in paths)


class PortTaken(RuntimeError):
    """The launcher found one of the stack's ports taken (by a process started since)."""


class Stack:
    """One local stack: its ports (by variable name), data directory and launcher process."""

    def __init__(self, data_dir: Path, **env: str):
        self.data_dir = Path(data_dir)
        self.env = {key: value for key, value in os.environ.items() if key != "MONGO_URI"}
        self.env.update(PYTHONPATH=_pythonpath(), MLSTUDIO_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1", **env)
        self.ports: dict[str, int] = {}
        self.pick_ports()
        self.process: subprocess.Popen | None = None

    def pick_ports(self) -> None:
        """A free port for every port variable of the stack (the registry's included)."""
        declared = [*stack_config.INFRASTRUCTURE_PORTS, *registry.declared_ports()]
        self.ports = dict(zip((port.env_var for port in declared), free_ports(len(declared)), strict=True))
        self.env.update({name: str(port) for name, port in self.ports.items()})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "run.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def state(self) -> dict | None:
        """What the launcher wrote once healthy: its pid, URL and processes (name -> pid)."""
        try:
            return json.loads((self.data_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def launcher(self, *args: str, timeout: float = START_TIMEOUT_S + 30) -> subprocess.CompletedProcess:
        """Runs `python -m deploy.local.launcher <args>` with this stack's settings and waits."""
        command = [sys.executable, "-m", "deploy.local.launcher", *args]
        return subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, timeout: float = START_TIMEOUT_S, attempts: int = 3) -> Stack:
        """Starts `launcher run` (it dies with this process) and waits until it is healthy.
        Should another process take one of the picked ports meanwhile, picks new ones."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.pick_ports()
        return self

    def _start_once(self, timeout: float) -> Stack:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                tied_to_parent([sys.executable, "-m", "deploy.local.launcher", "run"]),
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while (self.state() or {}).get("pid") != self.process.pid:
            if self.process.poll() is not None:
                error = PortTaken if self.process.returncode == 2 and "already in use" in self.log_tail() else RuntimeError
                raise error(f"the stack exited with code {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the stack was not healthy within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the launcher, which stops everything; SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                signal_group(self.process.pid, signal.SIGKILL)
                for pid in (self.state() or {}).get("processes", {}).values():
                    if pid_alive(pid):
                        signal_group(pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def restart(self) -> Stack:
        self.stop()
        return self.start()

    def start_component(self, name: str, log_path: Path, **overrides: str) -> subprocess.Popen:
        """One more process of the registry component `name` (a second worker, say), with the
        environment the launcher gives that component, plus `overrides`; the caller stops it."""
        config = stack_config.load(registry.declared_ports(), self.env)
        mongo_uri = stack_mongo.uri(config.ports[stack_config.MONGO_PORT.name])
        context = registry.Context(config=config, mongo_uri=mongo_uri, media_signing_key="unused")
        component = next(c for c in registry.COMPONENTS if c.name == name)
        env = {**self.env, **registry.component_env(context, component)}
        if "METRICS_PORT" in env:  # the stack's own instance of the component holds that one
            env["METRICS_PORT"] = str(free_ports(1)[0])
        env.update(overrides)
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", component.module], cwd=REPO_ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class Api(requests.Session):
    """A session whose relative URLs go to the gateway; no proxies (loopback), REQUEST_TIMEOUT_S."""

    def __init__(self, base_url: str, token: str | None = None):
        super().__init__()
        self.base_url = base_url
        self.trust_env = False
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, *args, **kwargs):
        if url.startswith("/"):
            url = self.base_url + url
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return super().request(method, url, *args, **kwargs)
