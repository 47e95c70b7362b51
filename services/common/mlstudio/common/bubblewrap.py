"""Running untrusted work confined with bubblewrap (`bwrap`, the sandbox Flatpak uses): one place
that builds the command line, so that every confined child of the stack (training scripts, the
model exporter, the TF Serving stand-in) is confined the same way.

What `command` makes: a new, empty root in which only what the child needs is bound at its own
path: the system's /usr (and the top-level links into it), the few files of /etc the dynamic
loader reads, the Python installation read-only (`python_paths`: at the paths it is reached by
and behind its symbolic links), the caller's code read-only, and the binds the caller names;
a fresh /proc (`proc_args`), a minimal /dev, the root and /dev read-only. New network (a loopback
of its own, none of the host's interfaces), PID, IPC, UTS and cgroup namespaces; a new session
(no terminal to inject keystrokes into); the child dies with the process that started bwrap
(`--die-with-parent`), and its PID namespace takes every process it started with it. The
environment is only what the caller passes (`--clearenv`): never the parent's credentials.

As root, bwrap runs privileged (no user namespace, which root does not need) and keeps only
CAP_SETUID/CAP_SETGID, so that the child can drop to an unprivileged user (`drop_privileges`)
before it runs anything untrusted; otherwise it makes an unprivileged user namespace, which
some container runtimes refuse: `probe` says whether bwrap works here, and if not, why.

This module imports nothing of the stack: confined children import it from inside the sandbox.
"""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 10.0
PR_SET_DUMPABLE = 4
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader and the C library read from /etc (TensorFlow's shared libraries load
# through ld.so.cache), and fontconfig's settings (Keras's imports load it, and complain without
# them); nothing else of /etc (no passwd, hosts, ssl keys) is bound.
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/fonts")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl: {os.strerror(code)}")


def make_undumpable() -> None:
    """Keeps processes of the same user (an unconfined child) from reading this process's
    environment and memory through /proc: where a service holds credentials and starts children
    that run untrusted input without bwrap."""
    prctl(PR_SET_DUMPABLE, 0)


@dataclass(frozen=True)
class Bind:
    """`source` on the host, seen at `dest` in the sandbox; read-only unless `writable`."""

    source: Path
    dest: str
    writable: bool = False


def namespace_flags(privileged: bool, bwrap: str) -> list[str]:
    """Every namespace bwrap makes. Privileged (root), no user namespace: the child's own setuid
    to the unprivileged user is what takes root away, and it needs the two capabilities bwrap
    otherwise drops; unprivileged, the user namespace is what lets bwrap make the others, and the
    sandbox may not make user namespaces of its own where bwrap can forbid it (`nested_userns_blocked`)."""
    common = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
              "--die-with-parent", "--new-session"]
    if privileged:
        return [*common, "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return ["--unshare-user", *(["--disable-userns"] if nested_userns_blocked(bwrap) else []), *common]


@functools.cache
def nested_userns_blocked(bwrap: str) -> bool:
    """Whether bwrap can keep the sandbox from making user namespaces of its own
    (`--disable-userns`). It sets the limit through /proc/sys, which a container runtime mounts
    read-only: there the sandbox could nest user namespaces (a larger kernel surface, no more of
    the host: they would hold nothing but what the sandbox already has), and the container's own
    seccomp profile bounds which namespaces can be made at all."""
    return _runs([bwrap, "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"])


def _runs(argv: list[str]) -> bool:
    """Whether `argv` (a bwrap probe) runs and exits 0 within PROBE_TIMEOUT_S."""
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=PROBE_TIMEOUT_S, close_fds=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def outermost(paths: Iterable) -> list[Path]:
    """`paths` without those inside another of them, shortest first."""
    kept: list[Path] = []
    for path in sorted({Path(p) for p in paths}, key=lambda p: (len(p.parts), str(p))):
        if not any(path == outer or outer in path.parents for outer in kept):
            kept.append(path)
    return kept


def system_args() -> list[str]:
    """/usr and the top-level links into it (merged /usr), or the directories themselves; the
    loader's files of /etc."""
    args: list[str] = []
    for entry in SYSTEM_DIRS:
        path = Path(entry)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), entry]
        elif path.is_dir():
            args += ["--ro-bind", entry, entry]
    args += ["--perms", "0755", "--dir", "/etc"]  # made like the host's otherwise: unreadable by the user
    for entry in SYSTEM_FILES:
        args += ["--ro-bind-try", entry, entry]
    return args


def python_paths(python: str = sys.executable) -> list[str]:
    """The Python installation that runs `python`: at the paths it is reached by and behind its
    symbolic links (a virtual environment that links to a pyenv install, say), the whole virtual
    environment when it is one. Not sys.path: a service's may hold the whole checkout, data
    included."""
    paths = {sys.base_prefix, sys.prefix, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
             str(Path(python).parent), os.path.realpath(Path(python).parent)}
    environment = Path(python).parent.parent
    if (environment / "pyvenv.cfg").is_file():
        paths.update({str(environment), os.path.realpath(environment)})
    return sorted(paths)


def readable_args(readable: Iterable) -> list[str]:
    """Read-only binds of `readable` at their own paths (the outermost of them, none of the
    system's directories, which are bound already). The directories bwrap makes above a bind copy
    the host's modes: /root (0700) would keep the unprivileged user from a Python installed under
    it, so they are made 0755 here; they hold nothing but the path. /tmp is left as it is (the
    caller binds its own there first)."""
    args: list[str] = []
    made: set[Path] = set()
    for path in outermost(readable):
        if any(path == Path(system) or Path(system) in path.parents for system in SYSTEM_DIRS):
            continue
        for ancestor in reversed(path.parents):
            if ancestor not in (Path("/"), Path("/tmp")) and ancestor not in made:
                args += ["--perms", "0755", "--dir", str(ancestor)]
                made.add(ancestor)
        args += ["--ro-bind", str(path), str(path)]
    return args


def command(bwrap: str, *, privileged: bool, env: dict[str, str], readable: Iterable = (), tmp: Path,
            dirs: Sequence[str] = (), binds: Sequence[Bind] = (), shm: Path | None = None, chdir: str,
            argv: Sequence[str], info_fd: int | None = None) -> list[str]:
    """The bwrap command line that runs `argv` with nothing of the host but the system's /usr,
    `readable` (read-only, at their own paths), `tmp` as /tmp (and `shm` as /dev/shm), and
    `binds`, in that order (a later bind may sit inside an earlier one). `dirs`: directories
    made (0755) before the binds, for those that go in them: bwrap would make them with the
    modes of the host's directories above the source (a private temporary directory's 0700
    would keep an unprivileged user out). `env` is the whole environment inside. `info_fd`:
    where bwrap writes the host PID of the sandbox's PID 1."""
    args = [bwrap, *namespace_flags(privileged, bwrap), "--clearenv"]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    for name, value in sorted(env.items()):
        args += ["--setenv", name, value]
    args += system_args()
    # /tmp first: Python may live under /tmp (a checkout there), and is then bound on top of it.
    args += ["--bind", str(tmp), "/tmp"]
    args += readable_args(readable)
    for directory in dirs:
        args += ["--perms", "0755", "--dir", directory]
    for bind in binds:
        args += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.dest]
    args += [*proc_args(bwrap, privileged), "--dev", "/dev"]
    if shm is not None:
        args += ["--bind", str(shm), "/dev/shm"]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", chdir, "--", *argv]
    return args


def probe(bwrap: str, privileged: bool | None = None) -> str | None:
    """None when bwrap can make its namespaces here, else why not (its own words).
    `privileged`: as it will run (default: as root)."""
    privileged = os.getuid() == 0 if privileged is None else privileged
    try:
        result = subprocess.run([bwrap, *namespace_flags(privileged, bwrap), "--ro-bind", "/", "/", "--", "/bin/true"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=PROBE_TIMEOUT_S, close_fds=True)
    except FileNotFoundError:
        return "bubblewrap (bwrap) is not installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be started: {exc}"
    if result.returncode == 0:
        return None
    words = result.stderr.decode("utf-8", "replace").strip().splitlines()
    return (words[-1] if words else f"bwrap exited with code {result.returncode}").removeprefix("bwrap: ")


@functools.cache
def fresh_proc(bwrap: str, privileged: bool) -> bool:
    """Whether bwrap can mount a /proc of the sandbox's own here. The kernel refuses one in a new
    user namespace while the /proc it would replace has masked paths, as a container runtime's
    has (Docker's, unless the container's /proc is unmasked: `systempaths=unconfined`)."""
    return _runs([bwrap, *namespace_flags(privileged, bwrap), "--ro-bind", "/", "/", "--proc", "/proc", "--", "/bin/true"])


def proc_args(bwrap: str, privileged: bool) -> list[str]:
    """The sandbox's /proc: its own, showing only its processes; where that is refused (see
    `fresh_proc`), the container's, read-only. Then the sandbox lists the container's processes,
    but cannot read their environment, memory or open files: its user namespace holds no
    capability over them, and the processes that hold credentials are not dumpable
    (`make_undumpable`)."""
    if fresh_proc(bwrap, privileged):
        return ["--proc", "/proc"]
    return ["--ro-bind", "/proc", "/proc"]


def drop_privileges(uid: int | None, gid: int | None, required: bool, hint: str = "") -> None:
    """Becomes `uid`/`gid` for good (root cannot be regained); refuses to go on as root if
    `required` (`hint`: which setting names the unprivileged user). Called by the confined child
    before anything untrusted runs; a no-op when it is not root (bwrap ran unprivileged, or its
    parent dropped already)."""
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        try:
            os.setuid(0)
        except OSError:
            pass
        else:
            raise PermissionError("root privileges could not be dropped")
    if required and (os.getuid() == 0 or os.geteuid() == 0):
        raise PermissionError("refusing to run untrusted code as root" + (f": {hint}" if hint else ""))
