"""Runs one training (an uploaded script, or the built-in recipe) in a confined child process and
says how it ended.

The trainer calls `Sandbox.run`. The child (`confine.py`, then `script_runner.py`) gets:
- an environment built from scratch: PATH, HOME and TMPDIR in its working directory, the
  PYTHONPATH of the runner, locale and TensorFlow's quiet flags; no database URI, storage keys,
  signing or JWT keys, nor anything else of the trainer's environment;
- a working directory holding only this job's data (`data/<tag>/...`), the script, an empty
  `output/` and `tmp/`;
- isolation: bubblewrap (no network, nothing of the host but this working directory and Python,
  a PID namespace; see `confine.py`), required for uploaded scripts unless
  `Confinement.require_isolation` is off: where bwrap is missing or cannot make its namespaces,
  an uploaded script is refused (outcome `not_isolated`) before any of it runs. The built-in
  recipe is our own code and runs with whatever isolation the platform allows;
- limits: wall-clock time here (at the deadline the confining process is told to end the
  training and everything it started, then its whole process group is killed), a disk quota
  here (what the working directory holds besides the dataset, its /tmp included, is measured
  every DISK_POLL_S; past `Limits.disk_bytes` the run is stopped), CPU time, memory,
  processes, file size in the child (see `confine.py`).

While it runs, its stdout and stderr are kept, the last `log_bytes` of them, and its progress
events are handed to `on_progress`; `check` is called a few times a second. Either may raise
(the job was cancelled, the worker is stopping): the child is killed at once and the exception
goes on. The outcome's `error` is a sentence for the model's owner: the script crashed (with its
exception), has no `train`, wrote no model, ran past a limit.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlstudio
from mlstudio.common import bubblewrap

from . import confine, model_files, script_runner

log = logging.getLogger(__name__)

SERVICE_ROOT = Path(__file__).resolve().parents[2]  # services/model, where model_service lives
COMMON_ROOT = Path(mlstudio.__path__[0]).resolve().parent  # services/common, where the shared library lives
POLL_S = 0.2
EXIT_GRACE_S = 2.0
DISK_POLL_S = 0.5
# What each file or directory counts for at least against the disk quota (so that a flood of
# empty files, which take inodes but no blocks, reaches it too).
DISK_ENTRY_BYTES = 4096
# Folders nested deeper than this stop the training: they serve no training, and past PATH_MAX
# (or Python's recursion limit) they would escape path-based walks and removals.
MAX_DEPTH = 64


@dataclass(frozen=True)
class Limits:
    wall_s: float = 3600.0
    cpu_s: float = 7200.0
    memory_bytes: int = 4 << 30
    processes: int = 512
    file_bytes: int = 2 << 30
    disk_bytes: int = 4 << 30  # all the training writes (its working directory and /tmp)
    open_files: int = 1024
    log_bytes: int = 256 << 10
    max_model_bytes: int = 2 << 30


@dataclass(frozen=True)
class Confinement:
    """How the child is confined beyond its limits."""

    user: str | None = "nobody"  # who runs the training when the trainer is root
    isolate: bool = True  # bubblewrap where the platform allows
    # Uploaded scripts are refused unless bubblewrap ran them. Off, they run without it where
    # the platform refuses it: with the trainer's network and files.
    require_isolation: bool = True
    bwrap: str = "bwrap"  # the bubblewrap executable (looked up on PATH)


@dataclass(frozen=True)
class Training:
    """One run: the script (or recipe) in `workdir`, the dataset in `workdir/data`."""

    workdir: Path
    script: Path
    params: dict
    trusted: bool = False  # the built-in recipe: may run as root where no other user exists, and without namespaces
    readable: tuple[str, ...] = ()  # more of the host the training may read (the transfer-learning backbone)


@dataclass(frozen=True)
class Outcome:
    """How a run ended. `model` is the collected model (file or SavedModel directory) when ok."""

    reason: str  # done | crash | load | no_train | no_model | bad_model | time_limit | cpu_limit | memory | disk | killed | sandbox | not_isolated
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    model: Path | None = None
    isolation: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason == "done"


class LogTail:
    """The last `limit` bytes written to a stream, and how much came before them."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buffer = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def write(self, chunk: bytes) -> None:
        with self._lock:
            self._buffer += chunk
            excess = len(self._buffer) - self.limit
            if excess > 0:
                del self._buffer[:excess]
                self._dropped += excess
        self.changed.set()

    def text(self) -> str:
        with self._lock:
            data, dropped = bytes(self._buffer), self._dropped
        body = data.decode("utf-8", errors="replace")
        return f"[... {dropped} earlier bytes of output left out ...]\n{body}" if dropped else body


def child_env(workdir: Path) -> dict[str, str]:
    """The child's whole environment: nothing is inherited from the trainer's."""
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(SERVICE_ROOT), str(COMMON_ROOT)])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "KERAS_HOME": str(workdir / ".keras"),
        "MPLCONFIGDIR": str(workdir / "tmp"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }


def readable_paths(python: str = sys.executable) -> list[str]:
    """All the training sees of the host besides the system's /usr: the Python installation (at
    the paths it is reached by, and behind its symbolic links), the runner's package and the
    shared library's (the bubblewrap helpers the runner drops privileges with). Not sys.path: the
    trainer's may hold the whole checkout (the Makefile puts it there), data included."""
    return sorted({*bubblewrap.python_paths(python), str(SERVICE_ROOT / "model_service"), str(COMMON_ROOT / "mlstudio")})


class TooDeep(Exception):
    """The working directory holds folders nested deeper than MAX_DEPTH."""


def _listing(fd: int) -> tuple[int, list[str]]:
    """The bytes the entries of the directory open as `fd` take (each at least
    DISK_ENTRY_BYTES), and the names of its subdirectories."""
    total, folders = 0, []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            total += max(info.st_blocks * 512, DISK_ENTRY_BYTES)
            if stat.S_ISDIR(info.st_mode):
                folders.append(entry.name)
    return total, folders


def disk_usage(workdir: Path, skip: str = "data") -> int:
    """Bytes the files under `workdir` take on disk, but its folder `skip` (the dataset), each
    entry at least DISK_ENTRY_BYTES. Walked through directory file descriptors, depth first, one
    open descriptor per level, links not followed, so that no path length or recursion limit
    leaves anything out; TooDeep past MAX_DEPTH levels."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    stack: list[tuple[int, list[str]]] = []  # (open folder, its subfolders still to walk)
    try:
        root = os.open(workdir, flags)
        stack.append((root, []))
        total, folders = _listing(root)
        stack[-1][1].extend(name for name in folders if name != skip)
        while stack:
            fd, folders = stack[-1]
            if not folders:
                os.close(stack.pop()[0])
                continue
            try:
                child = os.open(folders.pop(), flags, dir_fd=fd)
            except OSError:
                continue  # gone, or replaced by something else than a folder
            stack.append((child, []))
            if len(stack) > MAX_DEPTH:
                raise TooDeep()
            size, subfolders = _listing(child)
            total += size
            stack[-1][1].extend(subfolders)
        return total
    finally:
        for fd, _ in stack:
            os.close(fd)


def _target_user(name: str | None) -> pwd.struct_passwd | None:
    """Who runs the training when the trainer is root (None: the trainer's own user)."""
    return pwd.getpwnam(name) if name and os.getuid() == 0 else None


def _pump(stream, sink: Callable[[bytes], None]) -> None:
    with stream:
        while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
            sink(chunk)


def _read_events(fd: int, events: queue.Queue) -> None:
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.put(event)
    events.put(None)


def _read_status(fd: int, status: dict) -> None:
    """The confining process's JSON lines, merged into `status` as they come."""
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            try:
                update = json.loads(line)
            except ValueError:
                continue
            if isinstance(update, dict):
                status.update(update)


class Sandbox:
    def __init__(self, limits: Limits, confinement: Confinement, python: str = sys.executable):
        self.limits = limits
        self.confinement = confinement
        self.python = python

    def prepare_workdir(self, workdir: Path) -> None:
        """The folders a run expects (the dataset goes in `data/`)."""
        for name in ("data", "output", "tmp"):
            (workdir / name).mkdir(parents=True, exist_ok=True)

    def run(self, training: Training, log_tail: LogTail, on_progress: Callable[[int, int, dict], None],
            check: Callable[[], None]) -> Outcome:
        workdir = training.workdir
        self.prepare_workdir(workdir)
        events_read, events_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            runner_spec = workdir / "runner.json"
            user = _target_user(self.confinement.user)
            runner_spec.write_text(json.dumps({
                # relative to the working directory: inside bubblewrap it is at another path (JOB_DIR)
                "script": str(training.script.relative_to(workdir)), "data_dir": "data", "output_dir": "output",
                "params": training.params, "events_fd": events_write,
                # inside bubblewrap started as root, the runner itself becomes the user (see confine.py)
                "uid": user.pw_uid if user else None, "gid": user.pw_gid if user else None,
                "require_unprivileged": not training.trusted,
            }))
            confine_spec = workdir.parent / "confine.json"
            self._write_confine_spec(confine_spec, training, status_write)
            process = subprocess.Popen(
                [self.python, "-s", "-m", "model_service.training.confine", str(confine_spec)],
                cwd=workdir, env=child_env(workdir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=(events_write, status_write), start_new_session=True)
        except BaseException:
            os.close(events_read)
            os.close(status_read)
            raise
        finally:
            os.close(events_write)
            os.close(status_write)
        return self._watch(process, training, log_tail, events_read, status_read, on_progress, check)

    def _write_confine_spec(self, path: Path, training: Training, status_fd: int) -> None:
        limits = self.limits
        path.write_text(json.dumps({
            "parent_pid": os.getpid(),
            "status_fd": status_fd,
            "workdir": str(training.workdir),
            "python": self.python,
            "user": self.confinement.user,
            "require_unprivileged": not training.trusted,
            "isolate": self.confinement.isolate,
            "require_isolation": self.confinement.require_isolation and not training.trusted,
            "bwrap": shutil.which(self.confinement.bwrap) or self.confinement.bwrap,
            "readable": readable_paths(self.python) + list(training.readable),
            "limits": {"cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes, "processes": limits.processes,
                       "file_bytes": limits.file_bytes, "open_files": limits.open_files},
        }))

    def _watch(self, process: subprocess.Popen, training: Training, log_tail: LogTail, events_read: int, status_read: int,
               on_progress, check) -> Outcome:
        events: queue.Queue = queue.Queue()
        status: dict = {}
        readers = [
            threading.Thread(target=_pump, args=(process.stdout, log_tail.write), daemon=True, name="training-log"),
            threading.Thread(target=_read_events, args=(events_read, events), daemon=True, name="training-events"),
            threading.Thread(target=_read_status, args=(status_read, status), daemon=True, name="training-status"),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + self.limits.wall_s
        next_disk_look = time.monotonic() + DISK_POLL_S
        last_error: dict | None = None
        done: dict | None = None
        exited_at: float | None = None
        try:
            while True:
                try:
                    event = events.get(timeout=POLL_S)
                except queue.Empty:
                    event = {}
                if event is None:
                    break  # every writer is gone: the run is over
                kind = event.get("event")
                if kind == "progress":
                    on_progress(int(event.get("epoch", 0)), int(event.get("epochs", 0)), dict(event.get("metrics") or {}))
                elif kind == "error":
                    last_error = event
                elif kind == "done":
                    done = event
                check()
                if time.monotonic() >= deadline:
                    self._kill(process)
                    return Outcome("time_limit", f"the training ran past its time limit of {self.limits.wall_s:.0f} s and was stopped",
                                   isolation=tuple(status.get("isolation") or ()))
                if time.monotonic() >= next_disk_look:
                    refused = self._disk_refusal(training.workdir)
                    if refused:
                        self._kill(process)
                        return Outcome("disk", refused, isolation=tuple(status.get("isolation") or ()))
                    next_disk_look = time.monotonic() + DISK_POLL_S
                if exited_at is None and process.poll() is not None:
                    exited_at = time.monotonic()
                if exited_at is not None and time.monotonic() - exited_at > EXIT_GRACE_S:
                    break  # a process the script left holds the pipe open; what it says no longer counts
        except BaseException:
            self._kill(process)
            raise
        self._finish(process)
        readers[2].join(EXIT_GRACE_S)
        return self._outcome(training, process.returncode, status, last_error, done)

    def _disk_refusal(self, workdir: Path) -> str | None:
        """Why what the training wrote must stop it (None: within its quota)."""
        try:
            used = disk_usage(workdir)
        except TooDeep:
            return f"the training made folders nested more than {MAX_DEPTH} deep and was stopped"
        if used > self.limits.disk_bytes:
            return f"the training wrote more than {self.limits.disk_bytes >> 20} MB (TRAINING_DISK_QUOTA_MB) and was stopped"
        return None

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        """Ends the run now: the confining process, asked first, kills the training and whatever
        it started (see `confine.py`); then its whole group is killed, in case it could not."""
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def _finish(self, process: subprocess.Popen) -> None:
        """The confining process has exited; anything left in its group goes too."""
        process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _outcome(self, training: Training, returncode: int, status: dict, error: dict | None, done: dict | None) -> Outcome:
        isolation = tuple(status.get("isolation") or ())
        if status.get("refused"):
            return Outcome("not_isolated", str(status["refused"]), isolation=isolation)
        if returncode == confine.EXIT_CONFINE_FAILED or "exit_code" not in status:
            return Outcome("sandbox", "the training sandbox could not be started on this server (see the log)", isolation=isolation)
        exit_code = int(status.get("exit_code", -1))
        if exit_code == confine.EXIT_CONFINE_FAILED:
            return Outcome("sandbox", "the training sandbox could not be started on this server (see the log)", isolation=isolation)
        if exit_code == 0 and done is not None:
            collected = model_files.collect(training.workdir / "output", training.workdir.parent / "model", self.limits.max_model_bytes)
            if collected.error:
                return Outcome(collected.reason, collected.error, isolation=isolation)
            return Outcome("done", None, dict(done.get("metrics") or {}), collected.path, isolation)
        reason, message = self._failure(exit_code, float(status.get("cpu_s", 0.0)), error)
        return Outcome(reason, message, isolation=isolation)

    def _failure(self, exit_code: int, cpu_s: float, error: dict | None) -> tuple[str, str]:
        limits = self.limits
        cpu_exceeded = exit_code in (-signal.SIGXCPU, -signal.SIGKILL, script_runner.EXIT_CPU_LIMIT) and cpu_s >= limits.cpu_s - 1
        if cpu_exceeded or (error or {}).get("kind") == "cpu_limit":
            return "cpu_limit", f"the training used more than its {limits.cpu_s:.0f} s of CPU time and was stopped"
        kind = (error or {}).get("kind")
        message = (error or {}).get("message", "")
        if kind == "no_train":
            return "no_train", "the script defines no train(data_dir, output_dir, params) function"
        if kind == "load":
            return "load", f"the script could not be loaded: {message}"
        if kind == "memory":
            return "memory", f"the training ran out of memory (limit {limits.memory_bytes >> 20} MiB): {message}"
        if kind == "crash":
            return "crash", f"the training script failed: {message}"
        if exit_code < 0:
            name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() else str(-exit_code)
            return "killed", (f"the training process was killed by {name} (it may have run out of memory: "
                              f"limit {limits.memory_bytes >> 20} MiB)")
        if exit_code == 0:
            return "crash", "the training process ended without finishing train"
        return "crash", f"the training process exited with code {exit_code} before train returned"
