"""Evaluation metrics, as plain JSON-ready dicts.

Classification is counted with numpy (scikit-learn is not a dependency of this project, and the
report needs only a confusion matrix): the same definitions as scikit-learn's
`classification_report` with `zero_division=0` (a class never predicted has precision 0, a class
with no image recall 0). Detection metrics come from pycocotools' COCOeval (the number detection
papers report): AP at IoU 0.5 and AP averaged over IoU 0.5:0.95, per class, and precision and
recall at IoU 0.5 of the detections scoring at least the model's threshold, matched by COCOeval.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_report(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, per-class precision, recall, F1 and support, their macro and weighted averages,
    and the confusion matrix (rows: true class, columns: predicted class) of labels `predicted`
    for images whose true labels are `truth`.

    The classes are those that occur: the true ones (sorted), then the predicted ones that are
    no true label (sorted), so that a model of 1000 classes tried on a two-tag project reports
    only what it said. Averages are over the true classes (those with support)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted must have the same length")
    true_classes = sorted(set(truth))
    classes = true_classes + sorted(set(predicted) - set(true_classes))
    index = {name: position for position, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    if len(truth):
        np.add.at(matrix, ([index[name] for name in truth], [index[name] for name in predicted]), 1)
    hits = np.diag(matrix)
    support = matrix.sum(axis=1)
    precision = _ratio(hits, matrix.sum(axis=0))
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    rows = [{"label": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i])} for i, name in enumerate(classes)]
    present = support > 0

    def average(weights: np.ndarray) -> dict:
        total = weights[present].sum()
        return {name: float((values[present] * weights[present]).sum() / total) if total else 0.0
                for name, values in (("precision", precision), ("recall", recall), ("f1", f1))}

    return {
        "images": len(truth),
        "accuracy": float(hits.sum() / len(truth)) if len(truth) else 0.0,
        "classes": rows,
        "macro_avg": average(np.ones(len(classes))),
        "weighted_avg": average(support.astype(np.float64)),
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist()},
    }


@dataclass(frozen=True)
class Box:
    """A box in pixels (x1, y1) top left, (x2, y2) bottom right; `score` None for a true box."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None

    def coco(self) -> list[float]:
        return [self.x1, self.y1, max(0.0, self.x2 - self.x1), max(0.0, self.y2 - self.y1)]


def _coco(images: int, categories: list[str], boxes: list[list[Box]]):
    from pycocotools.coco import COCO

    ids = {name: position + 1 for position, name in enumerate(categories)}
    annotations = []
    for image, found in enumerate(boxes, start=1):
        for box in found:
            x, y, width, height = box.coco()
            annotation = {"id": len(annotations) + 1, "image_id": image, "category_id": ids[box.label], "bbox": [x, y, width, height],
                          "area": width * height, "iscrowd": 0}
            if box.score is not None:
                annotation["score"] = float(box.score)
            annotations.append(annotation)
    dataset = COCO()
    dataset.dataset = {"images": [{"id": image} for image in range(1, images + 1)], "annotations": annotations,
                       "categories": [{"id": ids[name], "name": name} for name in categories]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        dataset.createIndex()
    return dataset


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]  # COCOeval's -1: no true box of the class
    return float(valid.mean()) if valid.size else None


def detection_report(truths: Sequence[Sequence[Box]], predictions: Sequence[Sequence[Box]], threshold: float) -> dict:
    """Per class: AP at IoU 0.5 (`ap50`) and over IoU 0.5:0.95 (`ap`) from every prediction,
    then `precision` and `recall` at IoU 0.5 of the predictions scoring at least `threshold`,
    and `support` (true boxes); `map50` and `map` average the classes that have true boxes.
    `truths[i]` and `predictions[i]` are the boxes of image i. None where undefined (AP of a
    class without true boxes, precision of a class never predicted above the threshold)."""
    from pycocotools.cocoeval import COCOeval

    if len(truths) != len(predictions):
        raise ValueError("truths and predictions must have the same length")
    true_labels = sorted({box.label for found in truths for box in found})
    categories = true_labels + sorted({box.label for found in predictions for box in found} - set(true_labels))
    rows = []
    if categories:
        ground = _coco(len(truths), categories, [list(found) for found in truths])
        detected = _coco(len(truths), categories, [list(found) for found in predictions])
        evaluation = COCOeval(ground, detected, "bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
        precision = evaluation.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max detections]
        every_area = evaluation.params.areaRng[0]
        for position, name in enumerate(categories):
            category = position + 1
            hits = detections = boxes = 0
            for found in evaluation.evalImgs:
                if not found or found["category_id"] != category or found["aRng"] != every_area:
                    continue
                kept = (np.asarray(found["dtScores"]) >= threshold) & ~np.asarray(found["dtIgnore"][0], dtype=bool)
                hits += int(((np.asarray(found["dtMatches"][0]) > 0) & kept).sum())
                detections += int(kept.sum())
                boxes += int((~np.asarray(found["gtIgnore"], dtype=bool)).sum())
            rows.append({"label": name, "precision": hits / detections if detections else None,
                         "recall": hits / boxes if boxes else None, "ap50": _mean(precision[0, :, position, 0, -1]),
                         "ap": _mean(precision[:, :, position, 0, -1]), "support": boxes})
    scored = [row for row in rows if row["support"]]
    return {
        "images": len(truths),
        "threshold": float(threshold),
        "classes": rows,
        "map50": float(np.mean([row["ap50"] for row in scored])) if scored else None,
        "map": float(np.mean([row["ap"] for row in scored])) if scored else None,
    }
