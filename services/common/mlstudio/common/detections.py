"""Detections as the API shows them: stored structured, shown also in the original string forms.

The frontend draws boxes by parsing `captions` (",<label> <score>" per object, score with three
decimals) and `boxes` (",[<x1> <y1> <x2> <y2>]" per object, integer pixels), so both strings are
derived here from the structured list and nowhere else (the image service renders its Images
with them, the video service the frames it lists).

A box a person drew has no score (`score: null`); the caption shows it as certain, `1.000`, so
the frontend's "<label> <score>" parsing keeps working.
"""
from __future__ import annotations

import math
from collections.abc import Iterable


THRESHOLD_HELP = ("Detection: the score (0 to 1] a detection needs to be kept; default the project's "
                  "`threshold` (0.4 unless the project sets another)")


def threshold(raw) -> float:
    """A request's `threshold` field: 0.0 (the model's default) when left out or empty, else a
    number in (0, 1]; InvalidArgument saying so otherwise."""
    from . import errors

    text = "" if raw is None else str(raw).strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # NaN fails too
        raise errors.InvalidArgument(f"threshold must be a number in (0, 1], got {text!r}", code="invalid_threshold")
    return value


def chosen_threshold(requested: float, project) -> float:
    """The threshold a prediction uses: the request's, else its project's (`threshold` of the
    project service's Project; 0 from a service that has none, leaving it to the model)."""
    return requested or float(getattr(project, "threshold", 0.0) or 0.0)


def as_score(value: float) -> float:
    """A model's confidence, without the float32 noise of protobuf (0.9 rather than 0.8999999761)."""
    return round(float(value), 6)


def detection(label: str, score: float, x1: float, y1: float, x2: float, y2: float) -> dict:
    """One stored detection: `{label, score, box: [x1, y1, x2, y2]}` in pixels."""
    coordinates = [round(float(value), 2) for value in (x1, y1, x2, y2)]
    return {"label": str(label), "score": as_score(score), "box": coordinates}


def person_detection(label: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    """One box a person drew: as `detection`, without a score."""
    return {**detection(label, 1.0, x1, y1, x2, y2), "score": None}


def shown_score(found: dict) -> float:
    """A detection's score, a person's box counting as certain."""
    return 1.0 if found.get("score") is None else found["score"]


def from_boxes(boxes: Iterable) -> list[dict]:
    """Stored detections from protobuf messages with label, score, x1, y1, x2, y2 (a message
    whose optional score is absent is a person's box)."""
    found = []
    for b in boxes:
        item = detection(b.label, b.score, b.x1, b.y1, b.x2, b.y2)
        if not _has_score(b):
            item["score"] = None
        found.append(item)
    return found


def _has_score(message) -> bool:
    has_field = getattr(message, "HasField", None)
    if has_field is None:
        return True
    try:
        return has_field("score")
    except ValueError:  # a message whose score is always set (the model service's Box)
        return True


def captions(detections: list[dict] | None) -> str | None:
    """`",cat 0.923,dog 0.500"`; None for images without detections (Classification)."""
    if detections is None:
        return None
    return "".join(f",{d['label']} {shown_score(d):.3f}" for d in detections)


def boxes(detections: list[dict] | None) -> str | None:
    """`",[10 20 110 220],[5 5 50 50]"`; None for images without detections (Classification)."""
    if detections is None:
        return None
    return "".join(",[{} {} {} {}]".format(*(_pixel(v) for v in d["box"])) for d in detections)


def _pixel(value: float) -> int:
    """Nearest integer pixel, halves rounded up (Python's round() would round 0.5 to 0)."""
    return math.floor(value + 0.5)
