"""Imports of a dataset zip into a project: the request's checks, the background job, the report.

`POST /projects/<id>/imports` checks the zip before anything is stored (`archive_checks`: zip
slip, bombs, links, counts; then the format is told from the content and its annotation files
are read, `dataset_readers`), so a bad archive answers a 4xx and leaves nothing behind. The zip
is then stored and a job queued (the same queue and worker threads as exports). The job imports
the images in batches with the rules of uploads (every image decoded and checked; bytes the
project already holds are not stored again), and records what it imported and what it skipped
and why. Its checkpoint is the next entry, so a job taken over after a crash resumes there; a
batch imported twice stores nothing twice, since an image's bytes are stored once per project.
The stored zip is removed when the job ends; the record expires like an export's.
"""
from __future__ import annotations

import logging
import math
import posixpath
import re
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from mlstudio.common import detections as detection_forms
from mlstudio.common import errors, jobs, mongo
from mlstudio.common.storage import ObjectStore
from mlstudio.common.tags import normalize_tag
from mlstudio.common.vocabulary import DETECTION

from . import detections as detections_mod
from .archive_checks import ArchiveLimits, open_checked, read_entry
from .dataset_formats import formats_for
from .dataset_readers import ImportEntry, list_dataset
from .exports import cancel_records, sweep_records
from .project_jobs import ProjectJobCore
from .uploads import CheckedImage, UploadedFile, check_bytes

log = logging.getLogger(__name__)

KIND = "import"
BATCH = 20
BATCH_BYTES = 16 * 1024 * 1024
# The "file 1 ('x.png') " that upload checks put first: the report names the file already.
_UPLOAD_LABEL = re.compile(r"^file \d+ \(.+?\) (?=is |has |cannot )")
# At most this many skipped files are listed in a report (all are counted).
MAX_LISTED_SKIPS = 1000
MAX_LABEL = 200


def import_key(project_id: int, import_id: int) -> str:
    return f"imports/{project_id}/{import_id}.zip"


class ImportCore(ProjectJobCore):
    """The import routes' rules: ownership, the archive's checks, what a person sees."""

    noun = "import"

    def __init__(self, images, repository, queue: jobs.JobQueue, store: ObjectStore, limits: ArchiveLimits, *,
                 max_annotation_bytes: int, ttl_s: float, clock: Callable[[], float] = time.time):
        self.images = images
        self.repository = repository
        self.queue = queue
        self.store = store
        self.limits = limits
        self.max_annotation_bytes = max_annotation_bytes
        self.ttl_s = ttl_s
        self.clock = clock

    def create(self, user_id: int, project_id: int, upload: UploadedFile | None) -> dict:
        project = self.images.project(project_id, user_id)
        if upload is None:
            raise errors.InvalidArgument("send the dataset zip in the multipart field 'file'", code="no_file")
        stream = upload.stream
        with open_checked(stream, self.limits) as archive:
            listing = list_dataset(archive, self.max_annotation_bytes)
        allowed = formats_for(project.type)
        if listing.format not in allowed:
            raise errors.Unprocessable(f"the zip is a {listing.format} dataset, which has boxes; a {project.type} project "
                                       f"imports {', '.join(f for f in allowed)}", code="format_mismatch")
        if not listing.entries:
            reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in listing.skipped[:3])
            raise errors.Unprocessable(f"the zip has no image to import ({reasons})" if reasons else "the zip has no image to import",
                                       code="no_images")
        import_id = self.repository.next_id()
        key = import_key(project_id, import_id)
        stream.seek(0)
        self.store.put_stream(key, stream, "application/zip")
        now = mongo.utc_now()
        doc = {"_id": import_id, "project": project_id, "user": user_id, "format": listing.format, "job": f"import-{import_id}",
               "key": key, "file_name": (upload.name or "")[-200:], "create_time": now,
               "expires_at": now + timedelta(seconds=self.ttl_s)}
        try:
            self.repository.insert(doc)
            job = self.queue.enqueue(doc["job"], KIND, {"import_id": import_id, "project_id": project_id}, total=len(listing.entries))
        except BaseException:
            self.store.delete(key)
            raise
        return self.present(doc, job)


    def present(self, doc: dict, job: jobs.Job | None) -> dict:
        report = (job.result if job and job.status == jobs.DONE else (job.checkpoint.get("report") if job else None)) or None
        return {
            "id": doc["_id"], "project": doc["project"], "format": doc["format"], "file_name": doc.get("file_name"),
            "status": job.status if job else "failed",
            "progress": {"done": job.progress.get("done", 0), "total": job.progress.get("total", 0)} if job else {"done": 0, "total": 0},
            "error": (job.error if job else "the import's job is gone") or None,
            "report": report, "create_time": mongo.iso(doc["create_time"]), "expires_at": mongo.iso(doc["expires_at"]),
        }

    def sweep_expired(self) -> int:
        """Removes import records past their expiry (and a zip a crash left), as exports'."""
        return sweep_records(self.repository, self.queue, self.store)

    def cancel_project(self, project_id: int) -> None:
        """Stops the imports of a project being deleted."""
        cancel_records(self.repository, self.queue, project_id)


class ImportJob:
    """The job handler: imports the images of one stored zip."""

    def __init__(self, images, repository, store: ObjectStore, limits: ArchiveLimits, *, max_annotation_bytes: int):
        self.images = images  # the ImageCore: checks and stores images
        self.repository = repository
        self.store = store
        self.limits = limits
        self.max_annotation_bytes = max_annotation_bytes

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        doc = self.repository.get(job.payload["import_id"])
        if doc is None:
            raise jobs.JobFailed("the import was removed before it ran")
        project = self.images.projects.get_project(doc["project"], doc["user"])
        report = dict(job.checkpoint.get("report") or {"imported": 0, "existing": 0, "skipped_count": 0, "skipped": []})
        with tempfile.TemporaryDirectory(prefix="import-") as work:
            local = Path(work) / "dataset.zip"
            self.store.download_to(doc["key"], local)
            with open(local, "rb") as stream, open_checked(stream, self.limits) as archive:
                listing = list_dataset(archive, self.max_annotation_bytes, doc["format"])
                start = int(job.checkpoint.get("next", 0))
                if start == 0:
                    for skipped in listing.skipped:
                        _skip(report, skipped["file"], skipped["reason"])
                total = len(listing.entries)
                for at in range(start, total, BATCH):
                    # A project deleted meanwhile stops the import (NotFound) before it stores more.
                    project = self.images.projects.get_project(doc["project"], doc["user"])
                    self._batch(project, archive, listing.entries[at:at + BATCH], report)
                    done = min(total, at + BATCH)
                    context.report(done, total, checkpoint={"next": done, "report": report})
        self.store.delete(doc["key"])
        return report

    def _batch(self, project, archive, entries: list[ImportEntry], report: dict) -> None:
        """Checks and stores `entries`, a few MiB of image bytes at a time."""
        checked: list[CheckedImage] = []
        facts: list[dict] = []
        for entry in entries:
            try:
                content = read_entry(archive, entry.name, self.images.limits.max_bytes)
                image = check_bytes(content, posixpath.basename(entry.name), self.images.limits)
                facts.append(_facts(project.type, entry, image))
            except errors.DomainError as exc:
                _skip(report, entry.name, _UPLOAD_LABEL.sub("", exc.message, count=1))
                continue
            checked.append(image)
            if sum(one.size for one in checked) >= BATCH_BYTES:
                self._store(project, checked, facts, report)
                checked, facts = [], []
        self._store(project, checked, facts, report)

    def _store(self, project, checked: list[CheckedImage], facts: list[dict], report: dict) -> None:
        if checked:
            _, stored = self.images.import_images(project, checked, facts)
            report["imported"] += stored
            report["existing"] += len(checked) - stored

    def cleanup(self, job: jobs.Job) -> None:
        self.store.delete(import_key(job.payload["project_id"], job.payload["import_id"]))


def _skip(report: dict, name: str, reason: str) -> None:
    report["skipped_count"] += 1
    if len(report["skipped"]) < MAX_LISTED_SKIPS:
        report["skipped"].append({"file": name, "reason": reason})


def _facts(project_type: str, entry: ImportEntry, image: CheckedImage) -> dict:
    """Tag, boxes and checked state of one imported image; InvalidArgument says what is wrong."""
    found = None
    if project_type == DETECTION:
        found = [_box(box, image, entry.relative) for box in entry.boxes or []]
    if entry.tag:
        tag = normalize_tag(entry.tag)
    elif found is not None:
        tag = detections_mod.best(found)[0]
    else:
        raise errors.InvalidArgument("it has no tag", code="invalid_tag")
    return {"tag": tag, "detections": found, "is_train": entry.checked}


def _box(box, image: CheckedImage, relative: bool) -> dict:
    try:
        label = box["label"]
        x1, y1, x2, y2 = (float(v) for v in box["box"])
        score = 1.0 if box.get("score") is None else float(box["score"])
    except (KeyError, TypeError, ValueError):
        raise errors.InvalidArgument("a box is not {label, box: [x1, y1, x2, y2]}", code="invalid_box") from None
    if relative:
        x1, x2, y1, y2 = x1 * image.width, x2 * image.width, y1 * image.height, y2 * image.height
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise errors.InvalidArgument(f"a box's label must be 1-{MAX_LABEL} characters", code="invalid_box")
    slack = 0.01  # rounding of relative coordinates
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, score)) or not (
            -slack <= x1 < x2 <= image.width + slack and -slack <= y1 < y2 <= image.height + slack) or not 0 <= score <= 1:
        raise errors.InvalidArgument(f"box {[x1, y1, x2, y2]} of {label!r} is outside the {image.width}x{image.height} image "
                                     "or empty", code="invalid_box")
    return detection_forms.detection(label.strip(), score, _clamp(x1, image.width), _clamp(y1, image.height),
                                     _clamp(x2, image.width), _clamp(y2, image.height))


def _clamp(value: float, high: int) -> float:
    """Within 0..high: a box a rounding outside its image ends at its edge."""
    return min(max(value, 0.0), float(high))
