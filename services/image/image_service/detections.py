"""Which tag a Detection image is filed under (the string forms live in mlstudio.common.detections)."""
from __future__ import annotations

from mlstudio.common.tags import NO_DETECTION_TAG, tag_from_label


def best(detections: list[dict]) -> tuple[str, float | None]:
    """The tag and score a Detection image is filed under: its most confident object's label,
    or `unlabeled` (no score) when nothing was found."""
    if not detections:
        return NO_DETECTION_TAG, None
    top = max(detections, key=lambda d: d["score"])
    return tag_from_label(top["label"]), top["score"]
