"""Linux namespaces and mounts for the training sandbox, through libc (ctypes).

Python 3.11 has no `os.unshare`, and `unshare(1)` cannot do what the sandbox needs between its
steps, so the few system calls are made here. Everything is Linux-only and is used only by the
confining child (`confine.py`), before any untrusted code runs.

A *mask* hides a directory behind an empty tmpfs, then binds back the few paths under it that
the script must reach (its own working directory; the Python installation when it lives in a
directory the unprivileged user cannot traverse, such as `/root`). Each kept path is opened
(`O_PATH`) before the tmpfs covers it and bound back from `/proc/self/fd/N`, so it keeps its
absolute path.
"""
from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _bytes(value) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)), f"mount {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


def map_own_ids(uid: int, gid: int) -> None:
    """In a new user namespace, maps this process's uid and gid to themselves (the only mapping
    an unprivileged process may write), so files it creates keep their owner."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def make_mounts_private() -> None:
    """Nothing mounted from now on propagates back to the host's mount namespace."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_proc() -> None:
    """A /proc of this PID namespace: the script sees only its own processes."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


@dataclass(frozen=True)
class Mask:
    """`directory` replaced by an empty tmpfs, except the `keep` paths under it. A `scratch`
    mask is a fresh writable temporary directory (for /tmp, /dev/shm) instead of a read-only one."""

    directory: Path
    keep: tuple[Path, ...] = ()
    scratch: bool = False


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _outermost(paths) -> list[Path]:
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(_within(path, outer) for outer in kept):
            kept.append(path)
    return kept


def untraversable_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that users other than its owner cannot enter."""
    for ancestor in reversed(path.parents):
        if ancestor == Path("/"):
            continue
        try:
            mode = os.stat(ancestor).st_mode
        except OSError:
            return None
        if not mode & stat.S_IXOTH:
            return ancestor
    return None


def plan_masks(hide, scratch, needed, *, other_user: bool) -> list[Mask]:
    """The masks to apply, outermost first.

    `hide`: directories the script must not see; `scratch`: shared temporary directories to
    replace with private ones; `needed`: paths the script must reach (they are kept under any
    mask, and when the script runs as `other_user`, their untraversable ancestors are masked so
    that the kept paths become reachable)."""
    every_needed = [Path(p) for p in needed]
    # The code the script runs may live above the hidden data (the local stack keeps its data
    # inside the repository), so kept paths come from every needed path, not only the outermost.
    needed = _outermost(every_needed)
    wanted: dict[Path, bool] = {}
    for directory in hide:
        wanted.setdefault(Path(directory), False)
    for directory in scratch:
        wanted[Path(directory)] = True
    if other_user:
        for path in needed:
            ancestor = untraversable_ancestor(path)
            if ancestor is not None:
                wanted.setdefault(ancestor, False)
    masks: list[Mask] = []
    for directory in sorted(wanted, key=lambda p: len(p.parts)):
        if directory == Path("/") or not directory.is_dir():
            continue
        covering = [mask for mask in masks if _within(directory, mask.directory)]
        if covering and not any(_within(directory, kept) for mask in covering for kept in mask.keep):
            continue  # already hidden by an outer mask
        keep = tuple(_outermost(path for path in every_needed if _within(path, directory) and path != directory))
        if directory in every_needed:
            continue  # the script needs all of it
        masks.append(Mask(directory, keep, wanted[directory]))
    return masks


def apply_mask(mask: Mask) -> None:
    """Covers `mask.directory` with a tmpfs and binds its kept paths back at the same place."""
    handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in mask.keep if path.is_dir()]
    try:
        options = "size=64m,mode=1777" if mask.scratch else "size=1m,mode=0755"
        mount("tmpfs", mask.directory, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for path, handle in handles:
            path.mkdir(parents=True, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
        if not mask.scratch:
            mount(None, mask.directory, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        for _path, handle in handles:
            os.close(handle)
