"""Classifying and detecting with a served model: images to batches of the model's input size,
one Predict call per batch, outputs to labels and boxes; stops as soon as the caller is gone.
"""
from __future__ import annotations

from mlstudio.common import errors, metrics
from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.lazy import lazy_module

from .. import detections, pixels
from ..tfserving_repository import serving_name
from .shared import CLASSIFICATION, DETECTION, KEEP_ASPECT, TRAINED

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

class Inference:
    """Classify and Detect (a part of `ModelCore`)."""

    def _usable(self, model_id: int, user_id: int, wanted_type: str) -> dict:
        doc = self._readable(model_id, user_id)
        if doc["type"] != wanted_type:
            verb = "Classify" if doc["type"] == CLASSIFICATION else "Detect"
            raise errors.InvalidArgument(f"model {model_id} is a {doc['type']} model; use {verb}", code="wrong_model_type")
        if doc["status"] != TRAINED:
            raise errors.NotAcceptable(f"model {model_id} is not ready (status {doc['status']})", code="model_not_ready")
        return doc

    def _predict(self, doc: dict, images: list[bytes], output_keys: list[str], deadline: Deadline) -> tuple[dict, list[tuple[int, int]]]:
        """One Predict call per at most `max_batch` images of one input size; outputs joined in
        image order. A model recorded with `resize: keep_aspect` resizes inside its own graph:
        it gets images at their own aspect ratio (longer side its input size), not squeezed.
        Stops (DeadlineExceeded) as soon as the caller is no longer waiting."""
        height, width, _ = doc["input_shape"]
        deadline.check("predicting")
        if doc.get("resize") == KEEP_ASPECT:
            groups = pixels.to_batches_keeping_aspect(images, max(height, width))
        else:
            groups = [(list(range(len(images))), pixels.to_batch(images, height, width))]
        name, version = serving_name(doc["_id"]), doc.get("version", 1)
        rows: dict[str, list] = {key: [None] * len(images) for key in output_keys}
        sizes: list = [None] * len(images)
        with metrics.prediction_timer(doc["_id"], doc.get("type"), len(images)):
            for indexes, batch in groups:
                for part in pixels.chunks(len(indexes), self.limits.max_batch):
                    deadline.check("predicting")
                    outputs = self.serving.predict(name, version, {"images": batch.pixels[part]}, output_keys, deadline=deadline)
                    for key in output_keys:
                        for index, row in zip(indexes[part], outputs[key]):
                            rows[key][index] = row
                for index, size in zip(indexes, batch.sizes):
                    sizes[index] = size
        deadline.check("answering the prediction")
        return {key: np.stack(rows[key]) for key in output_keys}, sizes

    def classify(self, model_id: int, user_id: int, images: list[bytes], deadline: Deadline = NONE) -> list[detections.Classification]:
        doc = self._usable(model_id, user_id, CLASSIFICATION)
        outputs, _sizes = self._predict(doc, images, ["probabilities"], deadline)
        return detections.classify(outputs["probabilities"], doc["labels"])

    def detect(self, model_id: int, user_id: int, images: list[bytes], threshold: float = 0.0,
               deadline: Deadline = NONE) -> list[list[detections.Detection]]:
        """Per image, the detections scoring at least `threshold` (0: the model's own default,
        else `detections.DEFAULT_THRESHOLD`), each with its score."""
        if threshold and not 0 < threshold <= 1:
            raise errors.InvalidArgument(f"threshold must be in (0, 1], got {threshold}", code="invalid_threshold")
        doc = self._usable(model_id, user_id, DETECTION)
        threshold = threshold or doc.get("threshold") or detections.DEFAULT_THRESHOLD
        keys = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
        outputs, sizes = self._predict(doc, images, keys, deadline)
        return detections.boxes_in_pixels(outputs, sizes, doc["labels"], threshold)
