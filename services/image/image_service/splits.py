"""Train/validation splits of an export: stratified per tag, reproducible from a seed, and small
in memory whatever the project's size.

Only checked images (`isTrain`: a person made or confirmed the label) are split; a validation set
of unreviewed labels would measure the model against its own guesses. Unchecked images, when an
export includes them, form their own `unchecked` split.

Each checked image gets a 64-bit rank, a hash of (seed, image id), so the same seed always gives
the same split and adding images moves no other image. Within each tag, the `round(n * fraction)`
lowest ranks go to validation (at least one when the fraction is above 0 and the tag has two or
more images). Finding those needs the ranks of a tag at once: 8 bytes per checked image (80 KB
for 10,000), never the documents.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable

TRAIN, VAL, UNCHECKED = "train", "val", "unchecked"


def rank(seed: int, image_id: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def validation_size(count: int, fraction: float) -> int:
    if fraction <= 0 or count < 2:
        return 0
    return min(count - 1, max(1, round(count * fraction)))


class SplitPlan:
    """Decides each image's split from one pass over (id, tag, checked) of the exported images."""

    def __init__(self, fraction: float, seed: int, rows: Iterable[tuple[int, str, bool]]):
        self.fraction = fraction
        self.seed = seed
        ranks: dict[str, array] = {}
        for image_id, tag, checked in rows:
            if checked:
                ranks.setdefault(tag, array("Q")).append(rank(seed, image_id))
        # The highest rank that still goes to validation, per tag (absent: none of it does).
        self.thresholds: dict[str, int] = {}
        for tag, values in ranks.items():
            size = validation_size(len(values), fraction)
            if size:
                self.thresholds[tag] = sorted(values)[size - 1]

    def split_of(self, image_id: int, tag: str, checked: bool) -> str:
        if not checked:
            return UNCHECKED
        threshold = self.thresholds.get(tag)
        return VAL if threshold is not None and rank(self.seed, image_id) <= threshold else TRAIN
