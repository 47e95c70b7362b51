"""Readers of the dataset formats an import accepts, from an already checked zip.

The format is told from the content: COCO (`annotations/*.json` or `*_annotations.coco.json`),
YOLO (`data.yaml`), Pascal VOC (`Annotations/*.xml`), CSV (`labels.csv` and images under
`images/`), else ImageNet folders (`[<split>/]<tag>/<file>`). Each reader lists the images to import (`ImportEntry`: the
entry name, its tag, boxes, checked state) and the files it skips, with why. When `labels.csv`
(which every studio export carries) is present beside another format, its tags and checked
states are used; the boxes still come from the format's own files.

COCO files are read through `pycocotools` (the COCO reference API, which indexes images,
categories and annotations); YAML with `yaml.safe_load`; XML with ElementTree after refusing any
DOCTYPE (so no entity expansion); CSV and YOLO lines as data. Annotation files are read whole,
up to `max_annotation_bytes` each.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.etree import ElementTree

import yaml
from mlstudio.common import errors

from .archive_checks import read_entry
from .dataset_formats import MANIFEST

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
UNCHECKED = "unchecked"


@dataclass
class ImportEntry:
    """One image to import. `boxes` are `{label, box: [x1, y1, x2, y2], score?}`; with
    `relative`, box values are fractions of the image size (YOLO) to scale once it is decoded."""

    name: str
    tag: str | None = None
    boxes: list[dict] | None = None
    checked: bool = True
    relative: bool = False


@dataclass
class DatasetListing:
    format: str
    entries: list[ImportEntry]
    skipped: list[dict] = field(default_factory=list)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not posixpath.basename(name).startswith(".")


def detect_format(names: list[str]) -> str:
    """The dataset format the entry names show (no entry is read)."""
    files = [name for name in names if not name.endswith("/")]
    if any(_is_coco_file(name) for name in files):
        return "coco"
    if "data.yaml" in files or any(name.endswith("/data.yaml") and name.count("/") == 1 for name in files):
        return "yolo"
    if any(posixpath.basename(posixpath.dirname(name)) == "Annotations" and name.endswith(".xml") for name in files):
        return "voc"
    if not any(is_image(name) for name in files):
        raise errors.Unprocessable("the zip holds no images (JPEG, PNG, WebP or BMP)", code="no_images")
    # The CSV layout keeps images under images/; the studio's ImageNet exports carry labels.csv too.
    if MANIFEST in files and all(name.startswith("images/") for name in files if is_image(name)):
        return "csv"
    return "imagenet"


def _is_coco_file(name: str) -> bool:
    return (posixpath.dirname(name).endswith("annotations") and name.endswith(".json")) or name.endswith("_annotations.coco.json")


class Reader:
    def __init__(self, archive: zipfile.ZipFile, max_annotation_bytes: int):
        self.archive = archive
        self.max_annotation_bytes = max_annotation_bytes
        self.names = [name for name in archive.namelist() if not name.endswith("/")]
        self.images = {name for name in self.names if is_image(name)}
        self.skipped: list[dict] = []

    def text(self, name: str) -> str:
        data = read_entry(self.archive, name, self.max_annotation_bytes)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise errors.Unprocessable(f"{name!r} is not UTF-8 text", code="bad_annotation") from None

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def listing(self, chosen: str) -> DatasetListing:
        entries = list(getattr(self, f"read_{chosen}")())
        if chosen != "csv" and MANIFEST in self.names:
            self._apply_manifest(entries)
        listed = {entry.name for entry in entries}
        known = {MANIFEST, *self.annotation_files}
        for name in self.names:
            if name not in listed and name not in known and not any(s["file"] == name for s in self.skipped):
                self.skip(name, "not an image of the dataset" if is_image(name) else "not an image or annotation file")
        return DatasetListing(chosen, entries, self.skipped)

    annotation_files: tuple[str, ...] = ()

    # -- the studio's own record -------------------------------------------------------------

    def _manifest_rows(self) -> Iterator[dict]:
        rows = csv.DictReader(io.StringIO(self.text(MANIFEST)))
        if not rows.fieldnames or "file" not in rows.fieldnames:
            raise errors.Unprocessable(f"{MANIFEST} needs a header with a 'file' column", code="bad_annotation")
        yield from rows

    def _apply_manifest(self, entries: list[ImportEntry]) -> None:
        by_name = {row["file"]: row for row in self._manifest_rows()}
        for entry in entries:
            row = by_name.get(entry.name)
            if row:
                entry.tag = row.get("tag") or entry.tag
                entry.checked = (row.get("checked") or "true").strip().lower() != "false"

    def read_csv(self) -> Iterator[ImportEntry]:
        self.annotation_files = (MANIFEST,)
        for number, row in enumerate(self._manifest_rows(), 2):
            name = (row.get("file") or "").strip()
            if name not in self.images:
                self.skip(name or f"{MANIFEST} line {number}", f"{MANIFEST} line {number} names no image of the zip")
                continue
            try:
                boxes = json.loads(row["detections"]) if row.get("detections") else None
            except ValueError:
                self.skip(name, f"{MANIFEST} line {number}: detections are not valid JSON")
                continue
            yield ImportEntry(name, row.get("tag") or None, boxes, (row.get("checked") or "true").strip().lower() != "false")

    # -- ImageNet folders --------------------------------------------------------------------

    def read_imagenet(self) -> Iterator[ImportEntry]:
        for name in sorted(self.images):
            parts = name.split("/")
            if len(parts) < 2:
                self.skip(name, "an image outside a tag folder (<tag>/<file>) has no tag")
                continue
            yield ImportEntry(name, parts[-2], None, not (len(parts) >= 3 and parts[-3] == UNCHECKED))

    # -- COCO --------------------------------------------------------------------------------

    def read_coco(self) -> Iterator[ImportEntry]:
        from pycocotools.coco import COCO

        files = sorted(name for name in self.names if _is_coco_file(name))
        self.annotation_files = tuple(files)
        for annotation_file in files:
            try:
                dataset = json.loads(self.text(annotation_file))
            except ValueError:
                raise errors.Unprocessable(f"{annotation_file!r} is not valid JSON", code="bad_annotation") from None
            if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
                raise errors.Unprocessable(f"{annotation_file!r} is not a COCO file (no 'images' list)", code="bad_annotation")
            dataset.setdefault("annotations", [])
            dataset.setdefault("categories", [])
            coco = COCO()
            coco.dataset = dataset
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
                    coco.createIndex()
            except (KeyError, TypeError, ValueError) as exc:
                raise errors.Unprocessable(f"{annotation_file!r} is not a valid COCO file ({type(exc).__name__}: {exc})",
                                           code="bad_annotation") from None
            split = _coco_split(annotation_file)
            names = {category["id"]: str(category.get("name", "")) for category in coco.loadCats(coco.getCatIds())}
            for image in coco.loadImgs(coco.getImgIds()):
                name = self._coco_image(annotation_file, split, str(image.get("file_name", "")))
                if name is None:
                    self.skip(str(image.get("file_name")), f"listed in {annotation_file} but not in the zip")
                    continue
                boxes = []
                for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None)):
                    try:
                        x, y, w, h = (float(v) for v in annotation["bbox"])
                        boxes.append({"label": names[annotation["category_id"]], "box": [x, y, x + w, y + h],
                                      "score": annotation.get("score")})
                    except (KeyError, TypeError, ValueError):
                        boxes = None
                        break
                if boxes is None:
                    self.skip(name, f"an annotation of it in {annotation_file} has no valid bbox or category")
                    continue
                yield ImportEntry(name, image.get("tag"), boxes, split != UNCHECKED)

    def _coco_image(self, annotation_file: str, split: str, file_name: str) -> str | None:
        folder = posixpath.dirname(annotation_file)
        root = posixpath.dirname(folder) if folder.endswith("annotations") else folder
        for candidate in (f"images/{split}/{file_name}", f"{split}/{file_name}", f"images/{file_name}", file_name):
            name = posixpath.join(root, candidate) if root else candidate
            if name in self.images:
                return name
        return None

    # -- YOLO --------------------------------------------------------------------------------

    def read_yolo(self) -> Iterator[ImportEntry]:
        described_at = "data.yaml" if "data.yaml" in self.names else next(n for n in self.names if n.endswith("/data.yaml"))
        root = posixpath.dirname(described_at)
        try:
            described = yaml.safe_load(self.text(described_at))
        except yaml.YAMLError:
            raise errors.Unprocessable(f"{described_at!r} is not valid YAML", code="bad_annotation") from None
        names = described.get("names") if isinstance(described, dict) else None
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not isinstance(names, dict) or not names:
            raise errors.Unprocessable(f"{described_at!r} has no class 'names'", code="bad_annotation")
        labels = [name for name in self.names if name.endswith(".txt") and "/labels/" in f"/{name}"]
        self.annotation_files = (described_at, *labels)
        for name in sorted(self.images):
            relative = name[len(root) + 1:] if root else name
            parts = relative.split("/")
            if "images" not in parts:
                self.skip(name, "a YOLO image must be under images/")
                continue
            at = parts.index("images")
            label_name = "/".join([*([root] if root else []), *parts[:at], "labels", *parts[at + 1:]])
            label_name = posixpath.splitext(label_name)[0] + ".txt"
            split = parts[at + 1] if len(parts) > at + 2 else ""
            boxes = []
            if label_name in self.names:
                boxes = self._yolo_boxes(label_name, names)
                if boxes is None:
                    self.skip(name, f"{label_name} has a line that is not 'class cx cy w h' with a known class and values in 0..1")
                    continue
            yield ImportEntry(name, None, boxes, split != UNCHECKED, relative=True)

    def _yolo_boxes(self, label_name: str, names: dict) -> list[dict] | None:
        boxes = []
        for line in self.text(label_name).splitlines():
            if not line.strip():
                continue
            try:
                klass, cx, cy, w, h = line.split()
                label = names[int(klass)]
                cx, cy, w, h = float(cx), float(cy), float(w), float(h)
            except (ValueError, KeyError):
                return None
            if not all(0 <= v <= 1 for v in (cx, cy, w, h)):
                return None
            boxes.append({"label": str(label), "box": [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]})
        return boxes

    # -- Pascal VOC --------------------------------------------------------------------------

    def read_voc(self) -> Iterator[ImportEntry]:
        files = sorted(n for n in self.names if posixpath.basename(posixpath.dirname(n)) == "Annotations" and n.endswith(".xml"))
        sets = [n for n in self.names if "/ImageSets/" in f"/{n}" and n.endswith(".txt")]
        self.annotation_files = (*files, *sets)
        unchecked = self._voc_unchecked(sets)
        for annotation_file in files:
            root = posixpath.dirname(posixpath.dirname(annotation_file))
            try:
                element = _parse_xml(self.text(annotation_file))
                file_name = (element.findtext("filename") or "").strip()
                boxes = [{"label": (found.findtext("name") or "").strip(),
                          "box": [float(found.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]}
                         for found in element.iter("object")]
            except (ElementTree.ParseError, TypeError, ValueError) as exc:
                self.skip(annotation_file, f"not a Pascal VOC annotation ({exc})")
                continue
            name = next((candidate for candidate in (posixpath.join(root, "JPEGImages", file_name), posixpath.join(root, file_name))
                         if candidate in self.images), None)
            if name is None:
                self.skip(annotation_file, f"its image {file_name!r} is not in the zip")
                continue
            stem = posixpath.splitext(posixpath.basename(annotation_file))[0]
            yield ImportEntry(name, None, boxes, stem not in unchecked)

    def _voc_unchecked(self, sets: list[str]) -> set[str]:
        found = set()
        for name in sets:
            if posixpath.basename(name) == f"{UNCHECKED}.txt":
                found.update(line.strip() for line in self.text(name).splitlines() if line.strip())
        return found


def _coco_split(annotation_file: str) -> str:
    base = posixpath.basename(annotation_file)
    if base.startswith("instances_"):
        return base[len("instances_"):-len(".json")]
    if base.endswith("_annotations.coco.json"):
        return posixpath.basename(posixpath.dirname(annotation_file))
    return ""


def _parse_xml(text: str) -> ElementTree.Element:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("DOCTYPE and entity declarations are not accepted")
    return ElementTree.fromstring(text)


def list_dataset(archive: zipfile.ZipFile, max_annotation_bytes: int, chosen: str | None = None) -> DatasetListing:
    """What an import of `archive` would import, and what it skips."""
    reader = Reader(archive, max_annotation_bytes)
    return reader.listing(chosen or detect_format(reader.names))
