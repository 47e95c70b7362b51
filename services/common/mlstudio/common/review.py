"""Checked labels (the original's `isTrain`) and a project's review threshold, for every service.

A label a person gave (an upload into a tag, a retag, a confirmation, corrected boxes, a frame
sent with a tag and no score) is checked. A label a model gave (a video frame, a prediction) is checked only when the model's
score reaches the project's review threshold; below it, or without a score (a Detection image
where nothing was found), it waits for a person's review. The project service keeps the
threshold (`review_threshold`, default `DEFAULT_REVIEW_THRESHOLD`); the image service applies
it, here, when it files a model's labels.
"""
from __future__ import annotations

import math

from . import errors

DEFAULT_REVIEW_THRESHOLD = 0.8


def threshold(value) -> float:
    """A `review_threshold` a person asked for: a number in [0, 1] (0 checks every model label,
    1 sends every one below certainty to review); InvalidArgument saying so otherwise."""
    if isinstance(value, bool):
        value = math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise errors.InvalidArgument(f"review_threshold must be a number from 0 to 1, got {value!r}",
                                     code="invalid_review_threshold")
    return number


def project_threshold(project) -> float:
    """The review threshold of a project as the project service answers it (`project_pb2.Project`
    or a stand-in); the default when it has none (an older project service)."""
    has_field = getattr(project, "HasField", None)
    if has_field is not None:
        return project.review_threshold if has_field("review_threshold") else DEFAULT_REVIEW_THRESHOLD
    value = getattr(project, "review_threshold", None)
    return DEFAULT_REVIEW_THRESHOLD if value is None else float(value)


def model_label_checked(score: float | None, review_threshold: float) -> bool:
    """Whether a model's label counts as checked: its score reaches the threshold. No score
    (nothing detected) is certain enough only for a threshold of 0, which checks every label."""
    return review_threshold <= 0 or (score is not None and score >= review_threshold)
