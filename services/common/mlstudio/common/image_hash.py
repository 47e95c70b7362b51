"""A perceptual hash of a picture, to tell near-identical images apart from different ones.

The hash is taken from an 9x8 grayscale thumbnail (each service makes it with its own imaging
library): 64 bits of difference hash (dHash: is each cell brighter than its right neighbour?),
which follows the picture's structure whatever its size, compression or small noise, plus the
thumbnail's mean brightness, which dHash alone ignores (a white and a black frame have the same
dHash). Two pictures are near-duplicates when their dHashes differ in at most `MAX_BITS` of 64
bits and their brightness by at most `MAX_BRIGHTNESS` of 255: the same scene re-encoded, resized
or slightly noisy, not the same scene with something moved.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 9, 8
MAX_BITS = 6
MAX_BRIGHTNESS = 16


@dataclass(frozen=True)
class PerceptualHash:
    bits: int  # 64-bit dHash
    brightness: int  # mean of the thumbnail, 0-255

    def distance(self, other: PerceptualHash) -> int:
        """How many of the 64 dHash bits differ."""
        return (self.bits ^ other.bits).bit_count()

    def near(self, other: PerceptualHash, max_bits: int = MAX_BITS, max_brightness: int = MAX_BRIGHTNESS) -> bool:
        return self.distance(other) <= max_bits and abs(self.brightness - other.brightness) <= max_brightness

    def encode(self) -> str:
        """18 hex digits (dHash, then brightness), as stored."""
        return f"{self.bits:016x}{self.brightness:02x}"

    @classmethod
    def decode(cls, text: str) -> PerceptualHash:
        return cls(int(text[:16], 16), int(text[16:18], 16))


def from_thumbnail(rows: Sequence[Sequence[int]]) -> PerceptualHash:
    """The hash of a 9-wide, 8-high grayscale thumbnail (rows of 0-255 values)."""
    if len(rows) != HEIGHT or any(len(row) != WIDTH for row in rows):
        raise ValueError(f"a thumbnail is {WIDTH}x{HEIGHT}")
    bits = 0
    total = 0
    for row in rows:
        values = [int(v) for v in row]
        total += sum(values)
        for left, right in zip(values, values[1:]):
            bits = (bits << 1) | (1 if left > right else 0)
    return PerceptualHash(bits, round(total / (WIDTH * HEIGHT)))
