"""Starting, supervising and stopping the stack's processes, leaving none behind.

Each child runs in its own process group, so stopping it also stops whatever it started, and
asks the kernel for SIGTERM should the launcher die without cleaning up (even by SIGKILL).
Every wait polls and gives up on a stop request, so Ctrl-C works at any moment.

Once the stack is up, a child that exits is started again, as compose's `restart:` and
Kubernetes do: after 1 s, then 2, 4, ... up to a cap, the delay starting over once a run lasted
long enough; each exit is logged with its code. Every child is supervised alike (MongoDB and
Envoy too: their data and config are on disk, a restart picks them up). A child that dies while
the stack starts is a configuration problem instead: the start fails, saying which.
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


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """How soon a child that exited is started again: `first_delay_s`, doubling with each exit
    in a row up to `max_delay_s`; a run that lasted `reset_after_s` starts the count over."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** max(0, exits_in_a_row - 1))


@dataclasses.dataclass
class _Child:
    spec: ProcessSpec
    process: subprocess.Popen
    started: float
    exits_in_a_row: int = 0
    restart_at: float | None = None  # set while waiting to be started again


class Supervisor:
    """The children, in start order; restarts those that exit (`supervise`), stops them all in
    reverse order."""

    def __init__(self, stop: threading.Event, policy: RestartPolicy = RestartPolicy(), clock: Callable[[], float] = time.monotonic):
        self._stop = stop
        self._policy = policy
        self._clock = clock
        self._running: list[_Child] = []

    @property
    def pids(self) -> dict[str, int]:
        return {child.spec.name: child.process.pid for child in self._running}

    def start(self, spec: ProcessSpec) -> subprocess.Popen:
        if self._stop.is_set():
            raise StopRequested
        process = self._spawn(spec)
        self._running.append(_Child(spec, process, self._clock()))
        log.info("started %s (pid %d)", spec.name, process.pid)
        return process

    def _spawn(self, spec: ProcessSpec) -> subprocess.Popen:
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

    def supervise(self, on_restart: Callable[[dict[str, int]], None] = lambda _pids: None, poll_s: float = 0.2) -> None:
        """Until a stop is requested: starts again each child that exited, with backoff, and
        calls `on_restart` with the new pids after each restart."""
        while not self._stop.wait(poll_s):
            for child in self._running:
                if child.restart_at is None:
                    self._notice_exit(child)
                elif self._clock() >= child.restart_at and self._restart(child):
                    on_restart(self.pids)

    def _notice_exit(self, child: _Child) -> None:
        code = child.process.poll()
        if code is None:
            return
        ran_s = self._clock() - child.started
        child.exits_in_a_row = 1 if ran_s >= self._policy.reset_after_s else child.exits_in_a_row + 1
        delay = self._policy.delay(child.exits_in_a_row)
        child.restart_at = self._clock() + delay
        signal_group(child.process.pid, signal.SIGKILL)  # whatever it left in its group
        where = f"; see {child.spec.output}" if child.spec.output else ""
        killed = f" ({signal.Signals(-code).name})" if code < 0 and -code in signal.valid_signals() else ""
        log.error("%s (pid %d) exited with code %d%s after %.0f s; restarting it in %g s (exit %d in a row)%s",
                  child.spec.name, child.process.pid, code, killed, ran_s, delay, child.exits_in_a_row, where)

    def _restart(self, child: _Child) -> bool:
        try:
            child.process = self._spawn(child.spec)
        except StartupError as error:
            child.exits_in_a_row += 1
            child.restart_at = self._clock() + self._policy.delay(child.exits_in_a_row)
            log.error("%s; trying again later", error)
            return False
        child.started, child.restart_at = self._clock(), None
        log.warning("restarted %s (pid %d)", child.spec.name, child.process.pid)
        return True

    def stop_all(self) -> None:
        while self._running:
            child = self._running.pop()
            self._stop_one(child.spec, child.process)

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
