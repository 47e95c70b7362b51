"""Groups of near-duplicate images in a project, from their perceptual hashes (`image_hash`).

Two images are near-duplicates when their hashes are near (at most `MAX_BITS` of the 64 dHash
bits differ, brightness within `MAX_BRIGHTNESS`); a group is a connected set of such pairs.
Comparing every pair would be quadratic, so candidates come from buckets: with at most 7 of 64
bits different, at least one of the hash's 8 bytes is equal (pigeonhole), so only images that
share a byte value at the same position are compared. Identical hashes are merged first, so a
project full of copies of one picture costs one comparison per copy.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from mlstudio.common.image_hash import MAX_BITS, PerceptualHash

assert MAX_BITS <= 7, "the byte buckets find only pairs that differ in fewer than 8 bits"


class _Sets:
    """Union-find over hashes."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, item):
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def groups(hashes: Iterable[tuple[int, PerceptualHash]]) -> list[list[int]]:
    """Groups of two or more image ids whose hashes chain together as near; each group in id
    order, groups by their first id."""
    by_hash: dict[PerceptualHash, list[int]] = defaultdict(list)
    for image_id, found in hashes:
        by_hash[found].append(image_id)
    sets = _Sets()
    buckets: dict[tuple[int, int], list[PerceptualHash]] = defaultdict(list)
    for found in by_hash:
        sets.find(found)
        for position in range(8):
            buckets[(position, (found.bits >> (8 * position)) & 0xFF)].append(found)
    for members in buckets.values():
        for i, first in enumerate(members):
            for second in members[i + 1:]:
                if sets.find(first) != sets.find(second) and first.near(second):
                    sets.union(first, second)
    grouped: dict[PerceptualHash, list[int]] = defaultdict(list)
    for found, ids in by_hash.items():
        grouped[sets.find(found)].extend(ids)
    return sorted((sorted(ids) for ids in grouped.values() if len(ids) > 1), key=lambda ids: ids[0])
