"""Takes the model a training wrote out of its output folder, without trusting the folder.

The script wrote `output/`, and the trainer may run as root: a symbolic link named `model.keras`
pointing at a file of the host must not be followed. So the folder is walked with directory file
descriptors and `O_NOFOLLOW`; only regular files and directories are copied (a link anywhere is
refused), up to a size limit, into a folder of the trainer's. What is found, in this order:
`model.keras`, `model.h5`, or a SavedModel in `saved_model/` (with its `saved_model.pb`).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

MODEL_FILES = ("model.keras", "model.h5")
SAVED_MODEL_DIR = "saved_model"
NO_MODEL = ("the training wrote no model: save it as output_dir/model.keras (or model.h5), "
            "or as a SavedModel in output_dir/saved_model/")


@dataclass(frozen=True)
class Collected:
    path: Path | None = None
    reason: str = "done"  # or no_model / bad_model
    error: str | None = None


class Refused(Exception):
    """The output cannot be taken (a link, a special file, too large)."""


def _open_dir(name: str, dir_fd: int | None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


class _Copier:
    def __init__(self, max_bytes: int):
        self.remaining = max_bytes

    def file(self, name: str, dir_fd: int, destination: Path) -> None:
        try:
            source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            raise Refused(f"{name} cannot be read as a regular file ({exc.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):
                raise Refused(f"{name} is not a regular file")
            with open(destination, "wb") as out:
                while chunk := os.read(source, 1 << 20):
                    self.remaining -= len(chunk)
                    if self.remaining < 0:
                        raise Refused("the model is larger than the size limit")
                    out.write(chunk)
        finally:
            os.close(source)

    def tree(self, dir_fd: int, destination: Path) -> None:
        destination.mkdir()
        for entry in os.scandir(dir_fd):
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                child = _open_dir(entry.name, dir_fd)
                try:
                    self.tree(child, destination / entry.name)
                finally:
                    os.close(child)
            elif stat.S_ISREG(mode):
                self.file(entry.name, dir_fd, destination / entry.name)
            else:
                raise Refused(f"{entry.name} in the SavedModel is a link or a special file")


def _names(dir_fd: int) -> set[str]:
    return set(os.listdir(dir_fd))


def collect(output_dir: Path, destination: Path, max_bytes: int) -> Collected:
    """Copies the model from `output_dir` to `destination/<name>`; what was found, or why not."""
    try:
        out_fd = _open_dir(str(output_dir), None)
    except OSError:
        return Collected(reason="no_model", error=NO_MODEL + " (the output folder was removed or replaced)")
    try:
        names = _names(out_fd)
        destination.mkdir(parents=True, exist_ok=True)
        copier = _Copier(max_bytes)
        for name in MODEL_FILES:
            if name in names:
                copier.file(name, out_fd, destination / name)
                return Collected(destination / name)
        if SAVED_MODEL_DIR in names:
            saved_fd = _open_dir(SAVED_MODEL_DIR, out_fd)
            try:
                if "saved_model.pb" not in _names(saved_fd):
                    return Collected(reason="no_model", error=NO_MODEL + " (saved_model/ holds no saved_model.pb)")
                copier.tree(saved_fd, destination / SAVED_MODEL_DIR)
            finally:
                os.close(saved_fd)
            return Collected(destination / SAVED_MODEL_DIR)
        return Collected(reason="no_model", error=NO_MODEL)
    except Refused as exc:
        return Collected(reason="bad_model", error=f"the trained model cannot be used: {exc}")
    except OSError as exc:
        return Collected(reason="bad_model", error=f"the trained model cannot be read: {exc.strerror}")
    finally:
        os.close(out_fd)
