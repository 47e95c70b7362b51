"""Turns model outputs into answers: classification (label + score) and TF Object Detection API
outputs into boxes in pixels of the original image.

Detection outputs follow the OD API: `detection_boxes` [n, k, 4] normalised
`[ymin, xmin, ymax, xmax]`, `detection_scores` [n, k], `detection_classes` [n, k] and
`num_detections` [n]. Class ids are 1-based, as in OD API label maps: class id `c` is the c-th
label of the label file (`labels[c - 1]`), whether the file numbered its classes from 0 or 1.
Because boxes are normalised, they map back onto the original image whatever size the model saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Classification:
    label: str
    score: float


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


def classify(probabilities: np.ndarray, labels: list[str]) -> list[Classification]:
    """The best label and its score, per row of `probabilities` [n, len(labels)]."""
    best = np.argmax(probabilities, axis=1)
    return [Classification(labels[int(index)], float(row[index])) for row, index in zip(probabilities, best)]


def class_label(class_id: float, labels: list[str]) -> str:
    """The label of an OD API class id (1-based); ids outside the label file keep their number."""
    index = int(round(float(class_id))) - 1
    return labels[index] if 0 <= index < len(labels) else f"class {int(round(float(class_id)))}"


def boxes_in_pixels(outputs: dict[str, np.ndarray], sizes: list[tuple[int, int]], labels: list[str], threshold: float) -> list[list[Detection]]:
    """Per image, the detections scoring at least `threshold`, best first, in original pixels.

    `sizes[i]` is image i's original (width, height)."""
    boxes = outputs["detection_boxes"]
    scores = outputs["detection_scores"]
    classes = outputs["detection_classes"]
    counts = outputs.get("num_detections")
    results = []
    for i, (width, height) in enumerate(sizes):
        count = scores.shape[1] if counts is None else min(int(counts[i]), scores.shape[1])
        found = []
        for j in range(count):
            score = float(scores[i, j])
            if score < threshold:
                continue
            ymin, xmin, ymax, xmax = np.clip(boxes[i, j].astype(np.float64), 0.0, 1.0)
            found.append(Detection(
                class_label(classes[i, j], labels), score,
                float(xmin * width), float(ymin * height), float(xmax * width), float(ymax * height)))
        found.sort(key=lambda detection: -detection.score)
        results.append(found)
    return results
