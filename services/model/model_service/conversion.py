"""Runs the exporter (`model_service.exporter`) in a confined child process and reads its verdict.

Converting a model runs it: TensorFlow loads the user's graph and traces it into our signature,
Keras deserialises the user's layers. The graph is checked first (`graph_safety`: only ops that
compute), and this is the second line: the child holds nothing worth stealing and can reach
nothing of the stack.

- An environment built from scratch (no database URI, storage keys, signing or JWT keys; nothing
  of the service's environment but locale and thread settings).
- bubblewrap (`mlstudio.common.bubblewrap`, as training scripts): a new, empty root holding the
  system's /usr, the Python installation and our code read-only, the uploaded file read-only at
  /input, and a fresh directory of this conversion's workspace read-write at /export (where the
  SavedModel, the verdict and the temporary files go); no network (a loopback of its own), new
  PID, IPC and UTS namespaces, a session of its own, and it dies with the service. No data
  directory, no signing keys, no other user's objects, no model repository are there to open.
- Limits: the wall-clock time limit (the child's process group is killed at it), memory
  (RLIMIT_DATA), file size, no core dumps; started as root, the child becomes `nobody` (the
  `user`) before it reads the file.

Where bwrap is missing or cannot make its namespaces (the images of docker compose and
Kubernetes run as a non-root user under a seccomp profile that refuses them), uploads are still
converted, in a child without bwrap (the clean environment, limits and user still apply; the
service is not dumpable, so the child cannot read its memory or environment through /proc), and
each conversion logs a warning; `require_isolation` (MODEL_EXPORT_REQUIRE_ISOLATION=true)
refuses them instead (503, saying what is missing).

A semaphore bounds how many conversions run at once (each loads TensorFlow and a model). The
exporter's verdict is the one way its texts (TensorFlow's, Keras's, the OS's errors) reach
users, so it is where server paths are taken out of them; and it is read as untrusted input (no
links followed, its size and fields checked), as is the SavedModel the child wrote.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import mlstudio
from mlstudio.common import bubblewrap, errors

from . import uploads
from .exporter import EXIT_UNUSABLE
from .user_messages import without_paths

log = logging.getLogger(__name__)

SERVICE_ROOT = Path(__file__).resolve().parents[1]  # where model_service lives
COMMON_ROOT = Path(mlstudio.__path__[0]).resolve().parent  # where the shared library lives
# Where the child sees the upload and its own directory inside bubblewrap.
INPUT_DIR = "/input"
EXPORT_DIR = "/export"
MAX_RESULT_BYTES = 64 << 10
# No file the export writes is legitimately larger than what an upload may unpack to (the
# weights), and a margin for the graph and the temporary files.
FILE_MARGIN_BYTES = 256 << 20


@dataclass(frozen=True)
class Conversion:
    """A converted model: the SavedModel directory and what the exporter learnt."""

    saved_model: Path
    input_shape: list[int]
    output_size: int | None


@dataclass(frozen=True)
class ExportConfinement:
    """How the exporter's child is confined beyond its clean environment (MODEL_EXPORT_*)."""

    require_isolation: bool = False  # refuse conversions where bwrap cannot run (503) rather than run unconfined
    user: str | None = "nobody"  # who runs the child when the service is root (None: root itself, unsafe)
    memory_bytes: int = 4 << 30
    bwrap: str = "bwrap"


def child_env(home: str, tmp: str) -> dict[str, str]:
    """The child's whole environment: nothing of the service's (its credentials above all)."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(SERVICE_ROOT), str(COMMON_ROOT)])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "KERAS_HOME": f"{home}/.keras",
        "MPLCONFIGDIR": tmp,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    if "OMP_NUM_THREADS" in os.environ:
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    return env


def readable_paths(python: str) -> list[str]:
    """What the child reads of the host besides the system's /usr: Python and our code."""
    return sorted({*bubblewrap.python_paths(python), str(SERVICE_ROOT / "model_service"), str(COMMON_ROOT / "mlstudio")})


def _target_user(name: str | None) -> pwd.struct_passwd | None:
    return pwd.getpwnam(name) if name and os.getuid() == 0 else None


def _unsafe_entry(root: Path) -> str | None:
    """The first thing under `root` that is neither a regular file nor a directory (links
    included, never followed); None when there is none. `root` itself must be a directory."""
    if not stat.S_ISDIR(os.lstat(root).st_mode):
        return root.name
    for directory, folders, files in os.walk(root):
        for name in folders + files:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return name
    return None


def _give_back(root: Path) -> None:
    """What the child's user wrote becomes the service's again (it goes into the model
    repository, where nothing the unprivileged user runs later may change it)."""
    uid, gid = os.getuid(), os.getgid()
    os.lchown(root, uid, gid)
    for directory, folders, files in os.walk(root):
        for name in folders + files:
            os.lchown(os.path.join(directory, name), uid, gid)


def _read_result(path: Path) -> dict | None:
    """The child's verdict, or None when it left none that makes sense (a link is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        raw = stream.read(MAX_RESULT_BYTES + 1)
    try:
        result = json.loads(raw) if len(raw) <= MAX_RESULT_BYTES else None
    except ValueError:
        return None
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("error"), str):
        return {"error": result["error"]}
    shape, size = result.get("input_shape"), result.get("output_size")
    if (isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and d > 0 for d in shape)
            and (size is None or (type(size) is int and size > 0))):
        return {"input_shape": shape, "output_size": size}
    return None


class SubprocessConverter:
    def __init__(self, *, timeout_s: float = 600.0, dynamic_size: int = 512, max_unzipped_bytes: int = 2 << 30,
                 concurrency: int = 1, python: str = sys.executable, confinement: ExportConfinement = ExportConfinement()):
        self.timeout_s = timeout_s
        self.dynamic_size = dynamic_size
        self.max_unzipped_bytes = max_unzipped_bytes
        self.python = python
        self.confinement = confinement
        self._slots = threading.BoundedSemaphore(max(1, concurrency))

    def convert(self, source: Path, fmt: str, model_type: str, preprocessing: str, work_dir: Path) -> Conversion:
        """Exports `source` into a SavedModel under `work_dir`; 422 with the reason when it cannot."""
        missing = bubblewrap.probe(self.confinement.bwrap)
        if missing is not None:
            if self.confinement.require_isolation:
                raise errors.Unavailable(
                    "models cannot be converted on this server: it converts them only isolated (bubblewrap) and cannot "
                    f"isolate them ({without_paths(missing)}); its operator can install bubblewrap and allow it namespaces, "
                    "or set MODEL_EXPORT_REQUIRE_ISOLATION=false", code="isolation_unavailable")
            log.warning("converting a model WITHOUT bubblewrap (%s): the model runs with this service's network and "
                        "files (clean environment, limits and user only); MODEL_EXPORT_REQUIRE_ISOLATION=true refuses "
                        "conversions instead", missing)
        user = _target_user(self.confinement.user)
        export_dir = work_dir / "export"
        (export_dir / "tmp").mkdir(parents=True)
        if user is not None:
            for path in (export_dir, export_dir / "tmp"):
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(source, 0o644)  # the child's user reads it
        with self._slots:
            finished = self._run(source, fmt, model_type, preprocessing, export_dir, user, isolated=missing is None)
        return self._verdict(export_dir, finished, user)

    def _command(self, source: str, fmt: str, model_type: str, preprocessing: str, export_dir: str,
                 user: pwd.struct_passwd | None) -> list[str]:
        command = [
            self.python, "-s", "-m", "model_service.exporter",
            "--source", source, "--format", fmt, "--type", model_type,
            "--preprocessing", preprocessing, "--dynamic-size", str(self.dynamic_size),
            "--max-unzipped-bytes", str(self.max_unzipped_bytes),
            "--output", f"{export_dir}/saved_model", "--result", f"{export_dir}/result.json",
            "--memory-bytes", str(self.confinement.memory_bytes),
            "--file-bytes", str(self.max_unzipped_bytes + FILE_MARGIN_BYTES),
        ]
        if user is not None:
            command += ["--uid", str(user.pw_uid), "--gid", str(user.pw_gid)]
        return command

    def _run(self, source: Path, fmt: str, model_type: str, preprocessing: str, export_dir: Path,
             user: pwd.struct_passwd | None, isolated: bool) -> subprocess.CompletedProcess:
        if isolated:
            inside_source = f"{INPUT_DIR}/model.{uploads.extension(fmt)}"  # Keras picks its loader by extension
            command = bubblewrap.command(
                self.confinement.bwrap, privileged=os.getuid() == 0, env=child_env(EXPORT_DIR, "/tmp"),
                readable=readable_paths(self.python), tmp=export_dir / "tmp", dirs=[INPUT_DIR],
                binds=[bubblewrap.Bind(source, inside_source), bubblewrap.Bind(export_dir, EXPORT_DIR, writable=True)],
                chdir=EXPORT_DIR, argv=self._command(inside_source, fmt, model_type, preprocessing, EXPORT_DIR, user))
            env = child_env(str(export_dir), str(export_dir / "tmp"))
        else:
            command = self._command(str(source), fmt, model_type, preprocessing, str(export_dir), user)
            env = child_env(str(export_dir), str(export_dir / "tmp"))
        process = subprocess.Popen(command, cwd=export_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise errors.Unprocessable(f"converting the model took longer than {self.timeout_s:.0f} s", code="bad_model_file") from None
        except BaseException:
            self._kill(process)
            raise
        finally:
            # Whatever the child left in its group (bwrap's sandbox dies with bwrap).
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.communicate()

    def _verdict(self, export_dir: Path, finished: subprocess.CompletedProcess, user) -> Conversion:
        stderr = finished.stderr.decode(errors="replace")[-2000:]
        result = _read_result(export_dir / "result.json")
        if result is None:
            if stderr.startswith("bwrap:") or "\nbwrap:" in stderr:
                log.error("the model exporter's sandbox could not be set up (exit %s): %s", finished.returncode, stderr)
                raise errors.DomainError("converting the model failed on the server")
            log.error("model exporter died (exit %s): %s", finished.returncode, stderr)
            raise errors.Unprocessable("the model file made the converter crash; it is not a usable model", code="bad_model_file")
        if "error" in result:
            if finished.returncode != EXIT_UNUSABLE:
                log.error("model exporter failed: %s\n%s", result["error"], stderr)
                raise errors.DomainError("converting the model failed on the server")
            raise errors.Unprocessable(without_paths(result["error"]), code="bad_model_file")
        saved_model = export_dir / "saved_model"
        try:
            unsafe = _unsafe_entry(saved_model)
        except OSError:
            unsafe = "saved_model"
        if unsafe is not None:
            log.error("the model exporter wrote a link or special file (%s) in its SavedModel", unsafe)
            raise errors.Unprocessable("the converted model holds links or special files; it is not a usable model", code="bad_model_file")
        if user is not None:
            _give_back(saved_model)
        return Conversion(saved_model, list(result["input_shape"]), result["output_size"])
