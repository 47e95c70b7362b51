"""Writers of the dataset formats an export produces, one image at a time into a zip.

Layouts (`<split>` is `train`, `val` or `unchecked`; `<file>` is `<image id>.<ext>`):
- `imagenet`: `<split>/<tag>/<file>`, the folders Keras' `image_dataset_from_directory` reads.
- `coco`: `images/<split>/<file>` and `annotations/instances_<split>.json` (COCO object
  detection: `bbox` is `[x, y, width, height]` in pixels; each annotation also keeps `score`).
- `yolo`: `images/<split>/<file>`, `labels/<split>/<image id>.txt` (`class cx cy w h`, relative
  to the image size) and `data.yaml` (Ultralytics' dataset file: paths and `names`).
- `voc`: Pascal VOC: `JPEGImages/<file>`, `Annotations/<image id>.xml`, and
  `ImageSets/Main/<split>.txt` listing each split's image ids.
- `csv`: `images/<split>/<file>` and `labels.csv`.

Every export also carries `labels.csv`, one row per image (file, split, tag, checked, size,
detections as JSON): the record an import reads to restore tags and checked states exactly.

Nothing here holds the dataset: image bytes are copied chunk by chunk, per-image annotations
are written as they come, and what must be one file listing every image (a COCO JSON per split,
`labels.csv`) is spooled to temporary files on disk and added at the end.
"""
from __future__ import annotations

import csv
import json
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree import ElementTree

import yaml

from mlstudio.common.vocabulary import DETECTION

from .splits import TRAIN, VAL

CLASSIFICATION_FORMATS = ("imagenet", "csv")
DETECTION_FORMATS = ("coco", "yolo", "voc", "imagenet", "csv")
FORMATS = ("imagenet", "coco", "yolo", "voc", "csv")
MANIFEST = "labels.csv"
MANIFEST_COLUMNS = ("file", "split", "tag", "checked", "width", "height", "detections", "id", "title")
CHUNK = 1024 * 1024


@dataclass
class ExportItem:
    """One image of an export: its document, its split and its name in the archive."""

    doc: dict
    split: str

    @property
    def file_name(self) -> str:
        return f"{self.doc['_id']}.{self.doc['key'].rsplit('.', 1)[-1]}"

    @property
    def detections(self) -> list[dict]:
        return self.doc.get("detections") or []


def formats_for(project_type: str) -> tuple[str, ...]:
    return DETECTION_FORMATS if project_type == DETECTION else CLASSIFICATION_FORMATS


class _Spool:
    """A text file on disk that grows as items come and is copied into the archive at the end."""

    def __init__(self):
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")

    def copy_to(self, entry) -> None:
        self.file.seek(0)
        for chunk in iter(lambda: self.file.read(CHUNK), ""):
            entry.write(chunk.encode())
        self.file.close()

    def add_to(self, archive: zipfile.ZipFile, name: str) -> None:
        with archive.open(_text_info(name), "w") as entry:
            self.copy_to(entry)


def _entry_info(name: str, compress_type: int) -> zipfile.ZipInfo:
    """A regular file (-rw-r--r--) with a fixed date, so the same export gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = compress_type
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    return info


def _text_info(name: str) -> zipfile.ZipInfo:
    return _entry_info(name, zipfile.ZIP_DEFLATED)


def _write_text(archive: zipfile.ZipFile, name: str, text: str) -> None:
    archive.writestr(_text_info(name), text)


def _number(value: float) -> str:
    """A coordinate as written in text formats: up to 3 decimals, no trailing zeros."""
    return format(round(float(value), 3), "g")


class DatasetWriter:
    """Writes one format into `archive`: `add` per image (its bytes through `copy_into`), then
    `finish`. `labels` are the detection labels of the whole export, sorted (class ids)."""

    image_folder = "images/{split}/"

    def __init__(self, archive: zipfile.ZipFile, labels: Iterable[str]):
        self.archive = archive
        self.labels = list(labels)
        self.class_index = {label: index for index, label in enumerate(self.labels)}
        self.manifest = _Spool()
        self._manifest_rows = csv.writer(self.manifest.file)
        self._manifest_rows.writerow(MANIFEST_COLUMNS)
        self.splits: dict[str, int] = {}

    def image_path(self, item: ExportItem) -> str:
        return self.image_folder.format(split=item.split, tag=item.doc["tag"]) + item.file_name

    def class_of(self, label: str) -> int:
        """The class index of `label`; a label first seen now (relabelled meanwhile) is appended."""
        if label not in self.class_index:
            self.class_index[label] = len(self.labels)
            self.labels.append(label)
        return self.class_index[label]

    def add(self, item: ExportItem, chunks: Iterable[bytes]) -> None:
        path = self.image_path(item)
        info = _entry_info(path, zipfile.ZIP_STORED)  # images are compressed already
        with self.archive.open(info, "w") as entry:
            for chunk in chunks:
                entry.write(chunk)
        self.splits[item.split] = self.splits.get(item.split, 0) + 1
        doc = item.doc
        self._manifest_rows.writerow([
            path, item.split, doc["tag"], "true" if doc.get("is_train", True) else "false", doc.get("width"),
            doc.get("height"), json.dumps(doc.get("detections")) if doc.get("detections") is not None else "",
            doc["_id"], doc.get("title", ""),
        ])
        self.annotate(item)

    def annotate(self, item: ExportItem) -> None:
        """Writes the format's own annotation of one image (none by default)."""

    def finish(self) -> None:
        self.manifest.add_to(self.archive, MANIFEST)


class ImageNetWriter(DatasetWriter):
    image_folder = "{split}/{tag}/"


class CsvWriter(DatasetWriter):
    pass


class CocoWriter(DatasetWriter):
    """One COCO JSON per split; its `images` and `annotations` arrays are spooled to disk."""

    def __init__(self, archive, labels):
        super().__init__(archive, labels)
        self.images: dict[str, _Spool] = {}
        self.annotations: dict[str, _Spool] = {}
        self.next_annotation = 1

    def annotate(self, item):
        doc = item.doc
        images = self.images.setdefault(item.split, _Spool())
        annotations = self.annotations.setdefault(item.split, _Spool())
        if images.file.tell():
            images.file.write(",")
        images.file.write(json.dumps({"id": doc["_id"], "file_name": item.file_name, "width": doc["width"],
                                      "height": doc["height"], "tag": doc["tag"]}))
        for found in item.detections:
            x1, y1, x2, y2 = found["box"]
            if annotations.file.tell():
                annotations.file.write(",")
            annotations.file.write(json.dumps({
                "id": self.next_annotation, "image_id": doc["_id"], "category_id": self.class_of(found["label"]) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                "score": found.get("score")}))
            self.next_annotation += 1

    def finish(self):
        categories = json.dumps([{"id": index + 1, "name": label, "supercategory": "none"}
                                 for index, label in enumerate(self.labels)])
        for split, images in self.images.items():
            with self.archive.open(_text_info(f"annotations/instances_{split}.json"), "w") as entry:
                entry.write(f'{{"info": {{"description": "ML Studio export"}}, "categories": {categories}, "images": ['.encode())
                images.copy_to(entry)
                entry.write(b'], "annotations": [')
                self.annotations[split].copy_to(entry)
                entry.write(b"]}")
        super().finish()


class YoloWriter(DatasetWriter):
    """A label file per image and `data.yaml`; an image without boxes has an empty label file."""

    def annotate(self, item):
        width, height = item.doc["width"], item.doc["height"]
        lines = []
        for found in item.detections:
            x1, y1, x2, y2 = found["box"]
            values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
            lines.append(" ".join([str(self.class_of(found["label"])), *(format(v, ".6f") for v in values)]))
        _write_text(self.archive, f"labels/{item.split}/{item.doc['_id']}.txt", "".join(line + "\n" for line in lines))

    def finish(self):
        described = {"path": ".", "train": f"images/{TRAIN}",
                     "val": f"images/{VAL}" if VAL in self.splits else f"images/{TRAIN}",
                     "nc": len(self.labels), "names": dict(enumerate(self.labels))}
        if "unchecked" in self.splits:
            described["unchecked"] = "images/unchecked"
        _write_text(self.archive, "data.yaml", yaml.safe_dump(described, sort_keys=False, allow_unicode=True))
        super().finish()


class VocWriter(DatasetWriter):
    """An XML per image; `ImageSets/Main/<split>.txt` lists each split's ids."""

    image_folder = "JPEGImages/"

    def __init__(self, archive, labels):
        super().__init__(archive, labels)
        self.sets: dict[str, _Spool] = {}

    def annotate(self, item):
        doc = item.doc
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "folder").text = "JPEGImages"
        ElementTree.SubElement(root, "filename").text = item.file_name
        size = ElementTree.SubElement(root, "size")
        for name, value in (("width", doc["width"]), ("height", doc["height"]), ("depth", 3)):
            ElementTree.SubElement(size, name).text = str(value)
        ElementTree.SubElement(root, "segmented").text = "0"
        for found in item.detections:
            element = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(element, "name").text = found["label"]
            ElementTree.SubElement(element, "pose").text = "Unspecified"
            ElementTree.SubElement(element, "truncated").text = "0"
            ElementTree.SubElement(element, "difficult").text = "0"
            box = ElementTree.SubElement(element, "bndbox")
            for name, value in zip(("xmin", "ymin", "xmax", "ymax"), found["box"]):
                ElementTree.SubElement(box, name).text = _number(value)
        ElementTree.indent(root)
        _write_text(self.archive, f"Annotations/{doc['_id']}.xml", ElementTree.tostring(root, encoding="unicode") + "\n")
        self.sets.setdefault(item.split, _Spool()).file.write(f"{doc['_id']}\n")

    def finish(self):
        for split, ids in self.sets.items():
            ids.add_to(self.archive, f"ImageSets/Main/{split}.txt")
        super().finish()


WRITERS: dict[str, type[DatasetWriter]] = {
    "imagenet": ImageNetWriter, "coco": CocoWriter, "yolo": YoloWriter, "voc": VocWriter, "csv": CsvWriter,
}
