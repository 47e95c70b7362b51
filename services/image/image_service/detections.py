"""Which tag a Detection image is filed under (the string forms live in mlstudio.common.detections).

By default every Detection image (a prediction, a video frame) is filed under `detected`, as the
original backend filed them: the original React UI shows its box editor only for images of that
type. A deployment that prefers collections by object sets `DETECTION_FILING=top_label`: each
image is then filed under its most confident object's label. Either way the boxes themselves stay
in `detections` (and the `captions` and `boxes` strings).
"""
from __future__ import annotations

from mlstudio.common.tags import NO_DETECTION_TAG, tag_from_label

DETECTED = "detected"
TOP_LABEL = "top_label"
FILINGS = (DETECTED, TOP_LABEL)
DETECTED_TAG = "detected"


def check_filing(mode: str) -> str:
    """`mode` if it is a known filing, else ValueError naming the choices."""
    if mode not in FILINGS:
        raise ValueError(f"unknown detection filing {mode!r}: use {' or '.join(FILINGS)}")
    return mode


def best(detections: list[dict]) -> tuple[str, float | None]:
    """Its most confident object's label and score, or `unlabeled` (no score) when nothing was found."""
    if not detections:
        return NO_DETECTION_TAG, None
    top = max(detections, key=lambda d: d["score"])
    return tag_from_label(top["label"]), top["score"]


def filed_under(detections: list[dict], mode: str = DETECTED) -> tuple[str, float | None]:
    """The tag and score a Detection image is filed under. The score is the most confident
    object's (None when nothing was found), whichever the tag, so `sort=score` and the review
    threshold work the same in both filings."""
    tag, score = best(detections)
    return (DETECTED_TAG, score) if mode == DETECTED else (tag, score)
