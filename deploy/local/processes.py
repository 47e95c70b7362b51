"""Starting, watching and stopping the stack's processes, leaving none behind.

Each child runs in its own process group, so stopping it also stops whatever it started, and
asks the kernel for SIGTERM should the launcher die without cleaning up (even by SIGKILL).
Every wait polls and gives up on a stop request, so Ctrl-C works at any moment.
"""
from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("launcher")


class StartupError(RuntimeError):
    """A process could not be started or did not become healthy; the message says which."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


@dataclasses.dataclass(frozen=True)
class HttpCheck:
    """Healthy when GET http://host:port/path answers 200."""

    port: int
    path: str = "/healthz"
    host: str = "127.0.0.1"

    def __call__(self) -> bool:
        return http_ok(f"http://{self.host}:{self.port}{self.path}")


@dataclasses.dataclass(frozen=True)
class TcpCheck:
    """Healthy when host:port accepts connections (for processes without an HTTP port)."""

    port: int
    host: str = "127.0.0.1"

    def __call__(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """How to run one process."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # on top of the launcher's
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None  # polled after start; None: running is enough
    output: Path | None = None  # file for stdout and stderr; None: the launcher's own
    stop_grace_s: float = 10.0  # between SIGTERM and SIGKILL


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 200 (no proxy: these are loopback addresses)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def tied_to_parent(argv: list[str], signal_name: str = "TERM") -> list[str]:
    """`argv` run so that it gets SIG<signal_name> when the process starting it dies.

    `setpriv --pdeathsig` (util-linux) sets the signal before exec. A `preexec_fn` would do the
    same but forces a plain fork() of the caller, which aborts processes that run gRPC's threads
    (the test runner does); where setpriv is missing the child is simply not tied."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", signal_name, "--", *argv] if setpriv else list(argv)


class Supervisor:
    """The running children, in start order; stops them in reverse."""

    def __init__(self, stop: threading.Event):
        self._stop = stop
        self._running: list[tuple[ProcessSpec, subprocess.Popen]] = []

    @property
    def pids(self) -> dict[str, int]:
        return {spec.name: process.pid for spec, process in self._running}

    def start(self, spec: ProcessSpec) -> subprocess.Popen:
        if self._stop.is_set():
            raise StopRequested
        output = None
        if spec.output is not None:
            spec.output.parent.mkdir(parents=True, exist_ok=True)
            output = open(spec.output, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            process = subprocess.Popen(
                tied_to_parent(spec.argv),
                env={**os.environ, **spec.env},
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
            )
        except OSError as error:
            raise StartupError(f"cannot start {spec.name} ({spec.argv[0]}): {error}") from None
        finally:
            if output is not None:
                output.close()
        self._running.append((spec, process))
        log.info("started %s (pid %d)", spec.name, process.pid)
        return process

    def wait_ready(self, spec: ProcessSpec, process: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._stop.is_set():
                raise StopRequested
            code = process.poll()
            if code is not None:
                where = f"; see {spec.output}" if spec.output else ""
                raise StartupError(f"{spec.name} exited with code {code} while starting{where}")
            if spec.ready is None or spec.ready():
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{spec.name} did not become healthy within {timeout_s:g} s")
            self._stop.wait(0.1)

    def watch(self) -> tuple[ProcessSpec, int] | None:
        """Blocks until a child exits (returns it and its exit code) or a stop is requested (None)."""
        while not self._stop.wait(0.5):
            for spec, process in self._running:
                code = process.poll()
                if code is not None:
                    return spec, code
        return None

    def stop_all(self) -> None:
        while self._running:
            spec, process = self._running.pop()
            self._stop_one(spec, process)

    @staticmethod
    def _stop_one(spec: ProcessSpec, process: subprocess.Popen) -> None:
        if process.poll() is None:
            log.info("stopping %s", spec.name)
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(spec.stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", spec.name, spec.stop_grace_s)
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
        signal_group(process.pid, signal.SIGKILL)  # anything it left in its group
