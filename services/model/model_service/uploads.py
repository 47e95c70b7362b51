"""Uploaded files: streamed to disk with a size cap, and recognised by content.

A model file is recognised by what it is, not by its name: HDF5's signature means a Keras `.h5`;
a zip holding `config.json` and `model.weights.h5` is a Keras 3 `.keras` file; a zip holding a
`saved_model.pb` is a zipped SavedModel. Anything else answers 415.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mlstudio.common import errors

from . import archive

H5 = "h5"
KERAS = "keras"
SAVED_MODEL_ZIP = "savedmodel-zip"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_EXTENSIONS = {H5: "h5", KERAS: "keras", SAVED_MODEL_ZIP: "zip"}


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it and a readable stream of its bytes."""

    filename: str
    stream: BinaryIO


def save(upload: Upload, destination: Path, max_bytes: int, what: str) -> int:
    """Copies `upload` to `destination` in chunks; 413 (and nothing left) past `max_bytes`."""
    written = 0
    try:
        with open(destination, "wb") as out:
            while chunk := upload.stream.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise errors.PayloadTooLarge(f"the {what} is larger than {max_bytes} bytes")
                out.write(chunk)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    if written == 0:
        destination.unlink(missing_ok=True)
        raise errors.InvalidArgument(f"the {what} is empty")
    return written


def model_format(path: Path) -> str:
    """h5, keras or savedmodel-zip, from the file's content; 415 otherwise."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_HDF5_SIGNATURE):
        return H5
    if head.startswith(_ZIP_SIGNATURE):
        names = {name.rstrip("/") for name in archive.zip_names(path)}
        if "config.json" in names and any(name.endswith(".weights.h5") for name in names):
            return KERAS
        if any(name == "saved_model.pb" or name.endswith("/saved_model.pb") for name in names):
            return SAVED_MODEL_ZIP
    raise errors.UnsupportedMediaType(
        "the model file must be a Keras .h5, a Keras .keras file, or a zip of a SavedModel directory",
        code="unsupported_model_format")


def extension(fmt: str) -> str:
    """The file extension a model of format `fmt` is stored with."""
    return _EXTENSIONS[fmt]
