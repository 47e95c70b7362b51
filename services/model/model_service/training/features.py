"""The trainer's side of transfer learning: where the backbone is, and its cache of features.

The backbone is EfficientNet-Lite0's `features.keras`, built at setup into the pretrained cache
(`pretrained/catalog.py`, `PRETRAINED_DIR`); its version is its source's checksum, its build
version and the recipe's way of computing features (`FEATURE_VERSION`), so features computed
otherwise are never mixed in. Every training may read it
(bound read-only into the sandbox at its own path; the recipe and scripts find it in
`params["backbone"]`).

The feature cache keeps, per backbone version, the features of each image the built-in recipe
has seen: `<cache>/<version>/<sha256 of the image's bytes>[-view].npy`, one float32 vector of
1280. The sandbox cannot write outside its working directory, so the trainer copies in what the
cache holds for the dataset's images before a run (`copy_in`) and takes the new ones out after
(`take_new`), only from the built-in recipe's runs (an uploaded script could write anything
there), and only files that are what they claim: regular files, the right name and size, a
float32 vector of 1280 finite values, loaded without pickles. The cache only grows with the
images trained on (5 kB each); removing it at any time is safe.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "feature_cache"  # in the working directory, what the cache holds for this dataset
OUTPUT_DIR_NAME = "features"  # in the output directory, what the recipe computed
FEATURES = 1280
# Bump when the recipe computes features differently (decoding, resizing, views): a new cache.
FEATURE_VERSION = 1
_NAME = re.compile(r"^[0-9a-f]{64}(-flip)?\.npy$")
_MAX_FILE_BYTES = 16 << 10  # a 1280-float vector is 5 kB with its .npy header


@dataclass(frozen=True)
class Backbone:
    model_file: Path  # features.keras, by its real path (bound at that path in the sandbox)
    version: str


def locate() -> Backbone | None:
    """The backbone built at setup, None where it is missing or its files do not match their stamp."""
    from ..pretrained import catalog

    model = catalog.IMAGENET_LITE0
    cache = catalog.default_cache()
    stamp = catalog.read_stamp(model, cache)
    if stamp is None or "features.keras" not in stamp.get("files", {}):
        log.warning("no transfer-learning backbone in %s: the transfer recipe will refuse to train "
                    "(make pretrained builds it)", catalog.model_dir(model, cache))
        return None
    model_file = Path(os.path.realpath(catalog.model_dir(model, cache) / "features.keras"))
    version = f"lite0-{model.source.sha256[:16]}-b{model.build_version}-f{FEATURE_VERSION}"
    return Backbone(model_file, version)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_in(cache: Path, data_dir: Path, destination: Path) -> int:
    """Copies the cached features of the dataset's images to `destination` (readable by the
    sandbox's user); how many files."""
    destination.mkdir(parents=True, exist_ok=True)
    os.chmod(destination, 0o755)
    if not cache.is_dir():
        return 0
    copied = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        digest = _sha256(path)
        for suffix in ("", "-flip"):
            name = f"{digest}{suffix}.npy"
            if (cache / name).is_file() and not (destination / name).exists():
                shutil.copyfile(cache / name, destination / name)
                os.chmod(destination / name, 0o644)
                copied += 1
    return copied


def _valid(path_fd: int) -> bool:
    import numpy as np

    with os.fdopen(os.dup(path_fd), "rb") as stream:
        try:
            values = np.load(stream, allow_pickle=False)
        except (OSError, ValueError):
            return False
    return values.shape == (FEATURES,) and values.dtype == np.float32 and bool(np.isfinite(values).all())


def take_new(output: Path, cache: Path) -> int:
    """Moves the valid feature files the recipe wrote in `output` into `cache` (each written
    whole, then renamed into place); how many."""
    try:
        folder = os.open(output, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return 0
    taken = 0
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(folder):
            if not _NAME.match(name) or (cache / name).exists():
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
            except OSError:
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_FILE_BYTES or not _valid(fd):
                    continue
                os.lseek(fd, 0, os.SEEK_SET)
                with tempfile.NamedTemporaryFile(dir=cache, prefix=".", suffix=".part", delete=False) as part:
                    part.write(os.read(fd, _MAX_FILE_BYTES + 1))
                os.replace(part.name, cache / name)
                taken += 1
            finally:
                os.close(fd)
    finally:
        os.close(folder)
    return taken
