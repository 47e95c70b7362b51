"""The small CNNs the benchmarks classify with, saved as the `.h5` files users upload.

Weights are random (seeded): the benchmarks measure how long labelling takes, not what the
labels are. Each model scales its own pixels (a Rescaling layer), as the original's models
expected raw 0-255 RGB, so both the benchmark's in-process code and the studio (preprocessing
`raw`) feed them the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIDEO_MODEL_SIZE = 64  # like the original backend's frame classifier
VIDEO_LABELS = ("bottle", "background")
PREDICT_MODEL_SIZE = 224
PREDICT_LABELS = tuple(f"class{index}" for index in range(10))


@dataclass(frozen=True)
class SavedModel:
    model_file: Path
    label_file: Path
    labels: tuple[str, ...]
    size: int


def _cnn(size: int, classes: int, filters: tuple[int, ...], seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((size, size, 3), name="image"), keras.layers.Rescaling(1.0 / 255.0)]
    for count in filters:
        layers += [keras.layers.Conv2D(count, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes, activation="softmax")]
    return keras.Sequential(layers, name=f"cnn{size}")


def _saved(model, directory: Path, name: str, labels: tuple[str, ...], size: int) -> SavedModel:
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / f"{name}.h5"
    model.save(model_file)
    label_file = directory / f"{name}-labels.txt"
    label_file.write_text("".join(f"{label}\n" for label in labels))
    return SavedModel(model_file, label_file, labels, size)


def video_model(directory: Path) -> SavedModel:
    """A 64x64 frame classifier: two conv blocks, two classes."""
    model = _cnn(VIDEO_MODEL_SIZE, len(VIDEO_LABELS), (16, 32), seed=64)
    return _saved(model, directory, "frame-classifier-64", VIDEO_LABELS, VIDEO_MODEL_SIZE)


def predict_model(directory: Path) -> SavedModel:
    """A 224x224 image classifier: three conv blocks, ten classes."""
    model = _cnn(PREDICT_MODEL_SIZE, len(PREDICT_LABELS), (16, 32, 64), seed=224)
    return _saved(model, directory, "image-classifier-224", PREDICT_LABELS, PREDICT_MODEL_SIZE)
