"""A project's tagged images, written where a training reads them: `data_dir/<tag>/<image_id>.<ext>`.

That is the layout Keras' `image_dataset_from_directory` reads, and it numbers classes by the
sorted folder names, so the model's labels are the sorted tag names. Images in a format it
cannot decode (WebP) are converted to PNG on the way. Tags come from the image service, which
validates them; they are checked again here because they become directory names.
"""
from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlstudio.common.tags import tag_problem

# What `image_dataset_from_directory` decodes, by content type -> file extension.
READABLE = {"image/jpeg": "jpg", "image/png": "png", "image/bmp": "bmp", "image/gif": "gif"}


class DatasetItem(Protocol):
    """One image of the dataset (the image service's `DatasetItem` message)."""

    image_id: int
    tag: str
    content: bytes
    content_type: str


class DatasetRefused(Exception):
    """The project's images cannot be trained on; the message says why, for a person."""


@dataclass(frozen=True)
class Dataset:
    """What was written: the labels in class-index order and each tag's image count."""

    data_dir: Path
    labels: list[str]
    counts: dict[str, int]

    @property
    def size(self) -> int:
        return sum(self.counts.values())


def check_counts(counts: dict[str, int], min_images_per_tag: int) -> None:
    """Refuses a dataset with fewer than two tags or a tag with too few images."""
    if len(counts) < 2:
        found = f"only the tag {next(iter(counts))!r}" if counts else "no tagged images"
        raise DatasetRefused(f"training needs images of at least two tags; the project has {found}")
    small = sorted(tag for tag, count in counts.items() if count < min_images_per_tag)
    if small:
        listed = ", ".join(f"{tag!r} ({counts[tag]})" for tag in small)
        raise DatasetRefused(f"each tag needs at least {min_images_per_tag} images to train on; too few in {listed}")


def _safe_dir_name(tag: str) -> str:
    if tag_problem(tag) or tag.strip().lower() != tag:  # only normalised tags name folders
        raise DatasetRefused(f"the tag {tag!r} cannot be used as a class name")
    return tag


def _readable_bytes(item: DatasetItem) -> tuple[bytes, str]:
    """The image's bytes in a format Keras reads, and their extension."""
    extension = READABLE.get(item.content_type)
    if extension:
        return item.content, extension
    from PIL import Image  # only for the rare formats Keras cannot read

    try:
        with Image.open(io.BytesIO(item.content)) as image:
            converted = io.BytesIO()
            image.convert("RGB").save(converted, format="PNG")
    except (OSError, ValueError):
        raise DatasetRefused(f"image {item.image_id} ({item.content_type}) could not be decoded") from None
    return converted.getvalue(), "png"


def materialise(items: Iterable[DatasetItem], data_dir: Path, *, min_images_per_tag: int, max_bytes: int) -> Dataset:
    """Writes every item under `data_dir/<tag>/`; the dataset, or DatasetRefused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    written = 0
    for item in items:
        if not item.tag:
            continue  # an untagged image (a detection frame) belongs to no class
        tag = _safe_dir_name(item.tag)
        content, extension = _readable_bytes(item)
        written += len(content)
        if written > max_bytes:
            raise DatasetRefused(f"the project's images are larger than the training limit of {max_bytes >> 20} MiB")
        folder = data_dir / tag
        folder.mkdir(exist_ok=True)
        (folder / f"{int(item.image_id)}.{extension}").write_bytes(content)
        counts[tag] += 1
    check_counts(dict(counts), min_images_per_tag)
    return Dataset(data_dir, sorted(counts), dict(sorted(counts.items())))
