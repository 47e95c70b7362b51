"""Small deterministic models, for the tests and for trying the API by hand (README).

- `light_dark_model`: a Keras classifier that says `light` when an image's mean pixel is above
  127.5, else `dark`. Fixed weights, no training: global average pooling, then one dense
  softmax layer whose logits are `±k * (mean - 127.5)`, so its scores are known exactly
  (`light_dark_scores`). Its label file is the original's `classLabel.txt`,
  `{'light': 0, 'dark': 1}`.
- `detection_module`: a SavedModel with the TF Object Detection API signature (batch of one
  uint8 image in, `detection_*` outputs): box 1 (class 1) scores the image's mean brightness, box
  2 (class 2) always scores 0.1, so white images hold one confident object and black ones none.

`python -m model_service.sample_models <dir>` writes light_dark.h5, light_dark.keras,
classLabel.txt, detector.zip and detector_labels.txt into <dir>.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

LIGHT_DARK_LABELS = "{'light': 0, 'dark': 1}\n"
LIGHT_DARK_SIZE = 32
LIGHT_DARK_GAIN = 0.02
DETECTOR_LABELS = "bottle\ncan\n"
# Normalised [ymin, xmin, ymax, xmax] of the detector's two boxes.
DETECTOR_BOXES = ((0.25, 0.1, 0.75, 0.5), (0.0, 0.0, 1.0, 1.0))
DETECTOR_SECOND_SCORE = 0.1


def light_dark_scores(mean_pixel: float) -> tuple[float, float]:
    """The light/dark model's (light, dark) scores for an image of this mean pixel value."""
    logit = LIGHT_DARK_GAIN * (mean_pixel - 127.5)
    light = 1.0 / (1.0 + np.exp(-2.0 * logit))
    return float(light), float(1.0 - light)


def light_dark_model(size: int = LIGHT_DARK_SIZE):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="channel_means")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="light_dark")(pooled)
    model = keras.Model(inputs, outputs, name="light_dark")
    gain = LIGHT_DARK_GAIN / 3.0  # the mean over three channels
    weights = np.array([[gain, -gain]] * 3, dtype=np.float32)
    bias = np.array([-127.5 * LIGHT_DARK_GAIN, 127.5 * LIGHT_DARK_GAIN], dtype=np.float32)
    model.get_layer("light_dark").set_weights([weights, bias])
    return model


def detection_module():
    """A tf.Module whose `detect` has the OD API serving signature (batch of one image)."""
    import tensorflow as tf

    boxes = tf.constant([DETECTOR_BOXES], dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def detect(input_tensor):
        brightness = tf.reduce_mean(tf.cast(input_tensor, tf.float32)) / 255.0
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.stack([[brightness, tf.constant(DETECTOR_SECOND_SCORE)]]),
            "detection_classes": tf.constant([[1.0, 2.0]]),
            "num_detections": tf.constant([2.0]),
        }

    module = tf.Module()
    module.detect = detect
    return module


def write_detection_saved_model(directory: Path) -> Path:
    import tensorflow as tf

    module = detection_module()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.detect})
    return directory


def zip_tree(directory: Path, destination: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            archive.write(path, prefix + path.relative_to(directory).as_posix())
    return destination


def write_samples(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model = light_dark_model()
    model.save(directory / "light_dark.h5")
    model.save(directory / "light_dark.keras")
    (directory / "classLabel.txt").write_text(LIGHT_DARK_LABELS)
    saved = write_detection_saved_model(directory / "detector_saved_model")
    zip_tree(saved, directory / "detector.zip", prefix="detector/")
    (directory / "detector_labels.txt").write_text(DETECTOR_LABELS)


if __name__ == "__main__":
    write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "sample-models"))
