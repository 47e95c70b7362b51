"""Which tag a Detection image is filed under, and the boxes a person draws (the string forms
live in mlstudio.common.detections).

By default every Detection image (a prediction, a video frame) is filed under `detected`, as the
original backend filed them: the original React UI shows its box editor only for images of that
type. A deployment that prefers collections by object sets `DETECTION_FILING=top_label`: each
image is then filed under its most confident object's label. Either way the boxes themselves stay
in `detections` (and the `captions` and `boxes` strings).
"""
from __future__ import annotations

import math

from mlstudio.common import detections as detection_forms
from mlstudio.common import errors
from mlstudio.common.tags import NO_DETECTION_TAG, normalize_tag, tag_from_label

DETECTED = "detected"
TOP_LABEL = "top_label"
FILINGS = (DETECTED, TOP_LABEL)
DETECTED_TAG = "detected"
# Far more boxes than any image holds; it bounds what one request can write into a document.
MAX_PERSON_BOXES = 500


def check_filing(mode: str) -> str:
    """`mode` if it is a known filing, else ValueError naming the choices."""
    if mode not in FILINGS:
        raise ValueError(f"unknown detection filing {mode!r}: use {' or '.join(FILINGS)}")
    return mode


def best(detections: list[dict]) -> tuple[str, float | None]:
    """Its most confident object's label and score, or `unlabeled` (no score) when nothing was found."""
    if not detections:
        return NO_DETECTION_TAG, None
    top = max(detections, key=lambda d: detection_forms.shown_score(d))
    return tag_from_label(top["label"]), top["score"]


def filed_under(detections: list[dict], mode: str = DETECTED) -> tuple[str, float | None]:
    """The tag and score a Detection image is filed under. The score is the most confident
    object's (None when nothing was found), whichever the tag, so `sort=score` and the review
    threshold work the same in both filings."""
    tag, score = best(detections)
    return (DETECTED_TAG, score) if mode == DETECTED else (tag, score)


def person_boxes(raw, width: int, height: int) -> list[dict]:
    """A person's boxes (`[{label, box: [x1, y1, x2, y2]}]`, pixels of a `width` x `height`
    image) as stored detections, without scores. Each label must be a valid tag (it is
    lower-cased like one); each box must be four finite numbers with x1 < x2 and y1 < y2, inside
    the image. InvalidArgument names the first bad box (by position, from 1) and what is wrong."""
    if not isinstance(raw, list):
        raise errors.InvalidArgument("detections must be a list of {label, box: [x1, y1, x2, y2]}", code="invalid_box")
    if len(raw) > MAX_PERSON_BOXES:
        raise errors.InvalidArgument(f"at most {MAX_PERSON_BOXES} detections per image, got {len(raw)}", code="invalid_box")
    return [_person_box(position, item, width, height) for position, item in enumerate(raw, 1)]


def _person_box(position: int, item, width: int, height: int) -> dict:
    def refuse(problem: str):
        return errors.InvalidArgument(f"detection {position} {_shown(item)}: {problem}", code="invalid_box")

    if not isinstance(item, dict) or "label" not in item or "box" not in item:
        raise refuse("expected {label, box: [x1, y1, x2, y2]}")
    unknown = set(item) - {"label", "box", "score"}
    if unknown:
        raise refuse(f"unknown fields {sorted(unknown)}")
    try:
        label = normalize_tag(item["label"])
    except errors.InvalidArgument as exc:
        raise refuse(f"its label is not a valid tag ({exc.message})") from None
    box = item["box"]
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        raise refuse("box must be four finite numbers [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x1 < x2 and y1 < y2):
        raise refuse("box is empty (it needs x1 < x2 and y1 < y2)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise refuse(f"box is outside the {width}x{height} image")
    return detection_forms.person_detection(label, x1, y1, x2, y2)


def _shown(item) -> str:
    """A short rendering of what was sent, so the message names the box."""
    text = repr(item)
    return text if len(text) <= 120 else text[:117] + "..."
