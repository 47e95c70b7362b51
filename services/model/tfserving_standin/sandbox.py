"""Confines whatever runs model graphs (the stand-in, or the real server) with bubblewrap.

A SavedModel is a program: the model service refuses graphs with file or network ops, and this
is the second wall behind that check. The server sees, read-only, only what it needs to run: /usr
and the system's libraries, the Python installation and virtual environment it runs from
(resolved through symlinks), the stand-in's own package, the model repository and its config
file. It writes only the directory of its gRPC socket, and a private /tmp. It runs in new pid,
ipc, uts and network namespaces (the network namespace holds nothing but a loopback, so the only
way in or out is the unix socket bound in from outside), dies with its parent, and starts from an
empty environment: no storage keys, signing keys, database address or anything else the launcher
held. The data directory, the secrets, object storage and the other services' code are simply
not there.

`bwrap_argv` is the whole policy, as bwrap flags; `usable` says whether bwrap can run here (it
needs user namespaces, or root, and many containers allow neither).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# System directories every dynamically linked program needs (those that exist are bound).
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
               "/etc/alternatives", "/etc/localtime", "/etc/ssl/certs")
# The server's whole environment (nothing is inherited).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
              "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def python_paths(python: str = sys.executable) -> tuple[str, list[Path]]:
    """The interpreter to run inside (its real path in the virtual environment, so that the
    environment's `pyvenv.cfg` is found there too) and the directories it needs: the
    environment and the base installation, symlinks resolved."""
    venv = Path(sys.prefix).resolve()
    base = Path(sys.base_prefix).resolve()
    executable = Path(python)
    inside = venv / "bin" / executable.name if (venv / "bin" / executable.name).exists() else executable.resolve()
    return str(inside), sorted({venv, base, Path(os.path.realpath(python)).parent})


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's whole environment: nothing inherited."""
    return {**BASE_ENV, **(extra or {})}


def bwrap_argv(command: list[str], *, read_only: Iterable[Path], writable: Iterable[Path], env: Mapping[str, str],
               bwrap: str = "bwrap") -> list[str]:
    """`command` under bwrap, seeing only the system, `read_only` and `writable` (each at its own
    path), with `env` as its whole environment."""
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
            "--unshare-cgroup-try", "--hostname", "tfserving", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]  # merged /usr: /lib -> usr/lib
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for path in _outermost(read_only):
        argv += ["--ro-bind", str(path), str(path)]
    for path in sorted({Path(p).resolve() for p in writable}):
        argv += ["--bind", str(path), str(path)]
    argv += ["--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    return [*argv, "--chdir", "/tmp", "--", *command]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` resolved, without those inside another one (bound with it already)."""
    resolved = sorted({Path(p).resolve() for p in paths})
    return [path for path in resolved if not any(other != path and path.is_relative_to(other) for other in resolved)]


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def usable(bwrap: str | None) -> str:
    """'' when bwrap can create the sandbox here, else why not."""
    if bwrap is None:
        return "bwrap (bubblewrap) is not installed"
    probe = bwrap_argv(["/bin/true"], read_only=[], writable=[], env={}, bwrap=bwrap)
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not run: {error}"
    if result.returncode != 0:
        return f"bwrap cannot create namespaces here: {result.stderr.strip()[:300]}"
    return ""
