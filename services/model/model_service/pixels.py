"""Encoded images -> one uint8 batch at a model's input size, remembering each original size.

Decoding uses Pillow (JPEG, PNG, WebP, BMP, GIF's first frame), applies the EXIF orientation
(so phone photos are upright, as a browser shows them), converts to RGB and resizes bilinearly
to the model's (height, width), or, for a model that resizes inside its own graph keeping the
aspect ratio (a detector squeezed to a square loses its objects), to a bounded size with the
image's own aspect ratio, images of one size batched together; large JPEGs are decoded at a
reduced scale that still covers it.
The batch stays uint8: the served signature does the scaling. Images are decoded on one thread
per core (Pillow releases the GIL while it decodes and resizes).
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from mlstudio.common import errors
from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles


@dataclass(frozen=True)
class Batch:
    """`pixels` is uint8 [n, height, width, 3]; `sizes[i]` is image i's original (width, height)."""

    pixels: np.ndarray
    sizes: list[tuple[int, int]]


_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


def decode(data: bytes, index: int = 0, at_least: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Image `index` of a request as an upright RGB picture, and its full upright (width, height);
    422 when it cannot be decoded.

    With `at_least`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides stay
    at least that long (libjpeg's DCT scaling): a large photo or frame bound for a small model
    input decodes several times faster, and sizes (for boxes) still refer to the full image."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
            if picture.getexif().get(_ORIENTATION) in _TRANSPOSED:
                width, height = height, width
            if at_least:
                picture.draft("RGB", (at_least, at_least))
            picture.load()
            upright = ImageOps.exif_transpose(picture)
            return upright.convert("RGB"), (width, height)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise errors.Unprocessable(f"image {index + 1} cannot be decoded: {exc}", code="bad_image") from None


def to_batch(images: list[bytes], height: int, width: int) -> Batch:
    """All `images` decoded and resized to (height, width), in order."""
    if not images:
        raise errors.InvalidArgument("no images given")
    pixels = np.empty((len(images), height, width, 3), dtype=np.uint8)

    def fill(index: int) -> tuple[int, int]:
        picture, size = decode(images[index], index, at_least=max(height, width))
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        pixels[index] = np.asarray(picture, dtype=np.uint8)
        return size

    threads = min(len(images), os.cpu_count() or 1)
    if threads == 1:
        return Batch(pixels, [fill(index) for index in range(len(images))])
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        sizes = list(pool.map(fill, range(len(images))))  # in order; the first failure is raised
    return Batch(pixels, sizes)


def fitted_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `longest`, the aspect ratio kept."""
    width, height = size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_batches_keeping_aspect(images: list[bytes], longest: int) -> list[tuple[list[int], Batch]]:
    """All `images` decoded and resized to a longer side of `longest`, keeping their aspect
    ratio, grouped by resulting size (a video's frames make one group): per group, the indexes of
    its images in `images` and their batch."""
    if not images:
        raise errors.InvalidArgument("no images given")

    def fit(index: int) -> tuple[np.ndarray, tuple[int, int]]:
        picture, size = decode(images[index], index, at_least=longest)
        target = fitted_size(picture.size, longest)
        if picture.size != target:
            picture = picture.resize(target, Image.Resampling.BILINEAR)
        return np.asarray(picture, dtype=np.uint8), size

    threads = min(len(images), os.cpu_count() or 1)
    if threads == 1:
        fitted = [fit(index) for index in range(len(images))]
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
            fitted = list(pool.map(fit, range(len(images))))
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (array, _size) in enumerate(fitted):
        groups.setdefault(array.shape, []).append(index)
    return [(indexes, Batch(np.stack([fitted[i][0] for i in indexes]), [fitted[i][1] for i in indexes]))
            for indexes in groups.values()]


def chunks(count: int, max_batch: int) -> list[slice]:
    """Slices cutting `count` items into batches of at most `max_batch`."""
    step = max(1, max_batch)
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]
