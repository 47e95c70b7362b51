"""The held-out split of a training: stratified (each tag keeps its share), seeded, reproducible.

Shared by the trainer, which records which images were held out, and the built-in recipe, which
holds them out; no dependency beyond the standard library, since the recipe imports it inside
the sandbox.
"""
from __future__ import annotations

import math
import random


def held_out(files_by_tag: dict[str, list[str]], fraction: float, seed: int) -> set[str]:
    """The files held out of training: `fraction` of each tag's (rounded, at least one where a
    tag has two or more, never all of a tag), chosen by a generator seeded with `seed`."""
    chosen: set[str] = set()
    if fraction <= 0:
        return chosen
    generator = random.Random(seed)
    for tag in sorted(files_by_tag):
        files = sorted(files_by_tag[tag])
        if len(files) < 2:
            continue
        count = min(len(files) - 1, max(1, math.floor(len(files) * fraction + 0.5)))
        chosen.update(generator.sample(files, count))
    return chosen
