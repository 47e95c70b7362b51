"""Exports of a project's images as a dataset zip: the request, the background job, the signed
download and the expiry.

`POST /projects/<id>/exports` checks the request and queues a job in the image service's
`dataset_jobs` collection (the shared lease-based queue, `mlstudio.common.jobs`); a worker thread
of the image service runs it. The job reads the images in id order, twice: once for the split
plan and the labels (ids, tags and labels only), once to write the zip. The zip is produced in a
thread into a pipe whose other end is the object store's upload (multipart on S3), so neither the
zip nor the images are ever held whole in memory or on disk. A job that fails or is cancelled
removes its zip; a finished export expires `EXPORT_TTL_S` after it finished, and a periodic sweep
removes the zip, the job and the record.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import timedelta

from mlstudio.common import errors, jobs, mongo
from mlstudio.common.media_files import MediaFile
from mlstudio.common.storage import ObjectStore
from mlstudio.common.tags import normalize_tag

from .dataset_formats import FORMATS, WRITERS, ExportItem, formats_for
from .project_jobs import ProjectJobCore
from .splits import SplitPlan

log = logging.getLogger(__name__)

KIND = "export"
CHUNK = 1024 * 1024
# Progress is written every this many images (each write is a database round trip).
REPORT_EVERY = 50
MAX_SEED = 2**63 - 1


def export_key(project_id: int, export_id: int) -> str:
    """Exports live beside the project's images, so a project's delete removes them too."""
    return f"exports/{project_id}/{export_id}.zip"


def file_path(project_id: int, export_id: int) -> str:
    return f"/projects/{project_id}/exports/{export_id}/file"


def job_id(export_id: int) -> str:
    return f"export-{export_id}"


def parse_request(body: dict, project_type: str) -> dict:
    """The export's options from the request body; InvalidArgument names what is wrong."""
    if not isinstance(body, dict):
        raise errors.InvalidArgument("the body must be a JSON object", code="invalid_body")
    unknown = set(body) - {"format", "tag", "checked_only", "val_fraction", "seed"}
    if unknown:
        raise errors.InvalidArgument(f"unknown fields {sorted(unknown)}; expected format, tag, checked_only, val_fraction, seed",
                                     code="invalid_body")
    chosen = body.get("format")
    allowed = formats_for(project_type)
    if chosen not in FORMATS:
        raise errors.InvalidArgument(f"format must be one of {', '.join(FORMATS)}", code="invalid_format")
    if chosen not in allowed:
        raise errors.InvalidArgument(f"format {chosen} needs boxes: a {project_type} project exports as {', '.join(allowed)}",
                                     code="invalid_format")
    tag = body.get("tag")
    checked_only = body.get("checked_only", False)
    fraction = body.get("val_fraction", 0.0)
    seed = body.get("seed", 0)
    if not isinstance(checked_only, bool):
        raise errors.InvalidArgument("checked_only must be true or false", code="invalid_body")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise errors.InvalidArgument("val_fraction must be a number from 0 up to (not including) 1", code="invalid_body")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise errors.InvalidArgument(f"seed must be an integer from 0 to {MAX_SEED}", code="invalid_body")
    return {"format": chosen, "tag": normalize_tag(tag) if tag is not None else None, "checked_only": checked_only,
            "val_fraction": float(fraction), "seed": seed}


class ExportCore(ProjectJobCore):
    """The export routes' rules: ownership, the request, what a person sees of an export."""

    noun = "export"

    def __init__(self, images, repository, queue: jobs.JobQueue, store: ObjectStore, signer, *, ttl_s: float,
                 clock: Callable[[], float] = time.time):
        self.images = images  # the ImageCore: who owns which project
        self.repository = repository
        self.queue = queue
        self.store = store
        self.signer = signer
        self.ttl_s = ttl_s
        self.clock = clock

    def create(self, user_id: int, project_id: int, body: dict) -> dict:
        project = self.images.project(project_id, user_id)
        options = parse_request(body, project.type)
        export_id = self.repository.next_id()
        now = mongo.utc_now()
        doc = {"_id": export_id, "project": project_id, "user": user_id, "project_type": project.type, **options,
               "job": job_id(export_id), "key": export_key(project_id, export_id), "create_time": now,
               # Until it finishes, an export expires a TTL after it was asked for (a job that
               # never ends is swept too); finishing sets the expiry from then.
               "expires_at": now + timedelta(seconds=self.ttl_s)}
        self.repository.insert(doc)
        job = self.queue.enqueue(doc["job"], KIND, {"export_id": export_id, "project_id": project_id})
        return self.present(doc, job)


    def present(self, doc: dict, job: jobs.Job | None) -> dict:
        status = job.status if job else "failed"
        done = status == jobs.DONE
        return {
            "id": doc["_id"], "project": doc["project"], "format": doc["format"], "tag": doc.get("tag"),
            "checked_only": doc.get("checked_only", False), "val_fraction": doc.get("val_fraction", 0.0),
            "seed": doc.get("seed", 0), "status": status,
            "progress": {"done": job.progress.get("done", 0), "total": job.progress.get("total", 0)} if job else {"done": 0, "total": 0},
            "error": (job.error if job else "the export's job is gone") or None,
            "count": doc.get("count"), "splits": doc.get("splits"), "size": doc.get("size"),
            "url": self.signer.url(file_path(doc["project"], doc["_id"]), now=self.clock()) if done else None,
            "create_time": mongo.iso(doc["create_time"]), "expires_at": mongo.iso(doc["expires_at"]),
        }

    def media(self, project_id: int, export_id: int, expires: str | None, signature: str | None) -> MediaFile:
        """The zip behind a signed URL; PermissionDenied when the signature is bad or old."""
        now = self.clock()
        self.signer.verify(file_path(project_id, export_id), expires, signature, now=now)
        doc = self.repository.get(export_id)
        if doc is None or doc["project"] != project_id or doc.get("size") is None:
            raise errors.NotFound(f"export {export_id} not found")
        max_age = max(0, int(expires) - int(now))
        return MediaFile(doc["key"], "application/zip", doc["size"], f"{doc['_id']:x}-{doc['size']:x}", max_age,
                         download_name=f"project-{project_id}-{doc['format']}-{export_id}.zip")

    def read(self, media: MediaFile, start: int = 0, length: int | None = None):
        return self.store.read_range(media.key, start, length)

    def sweep_expired(self) -> int:
        """Removes exports past their expiry (see `sweep_records`)."""
        return sweep_records(self.repository, self.queue, self.store)

    def cancel_project(self, project_id: int) -> None:
        """Stops the exports of a project being deleted (see `cancel_records`)."""
        cancel_records(self.repository, self.queue, project_id)


def sweep_records(repository, queue: jobs.JobQueue, store: ObjectStore) -> int:
    """Removes dataset jobs' records past their expiry: the zip, the job, the record; returns how
    many. A job still unfinished is cancelled instead, so its worker stops and cleans up first
    (removing its job under it would leave the worker nothing to clean up by); a later sweep
    removes it. Idempotent."""
    removed = 0
    for doc in repository.expired(mongo.utc_now()):
        job = queue.get(doc["job"])
        if job is not None and not job.finished:
            queue.cancel(doc["job"])
            continue
        store.delete(doc["key"])
        queue.delete(doc["job"])
        repository.delete(doc["_id"])
        removed += 1
    return removed


def cancel_records(repository, queue: jobs.JobQueue, project_id: int) -> None:
    """Cancels the unfinished dataset jobs of a project being deleted: each stops at its next
    batch and removes its zip; the records go with the expiry sweep."""
    for doc in repository.list(project_id):
        queue.cancel(doc["job"])


class ExportJob:
    """The job handler: writes the zip of one export into object storage."""

    def __init__(self, image_repository, repository, store: ObjectStore, *, ttl_s: float):
        self.image_repository = image_repository
        self.repository = repository
        self.store = store
        self.ttl_s = ttl_s

    def _doc(self, job: jobs.Job) -> dict:
        doc = self.repository.get(job.payload["export_id"])
        if doc is None:
            raise jobs.JobFailed("the export was removed before it ran")
        return doc

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        doc = self._doc(job)
        selection = {"tag": doc.get("tag"), "checked_only": doc.get("checked_only", False)}
        labels: set[str] = set()
        total = done = 0

        def plan_rows():
            nonlocal total
            for image in self.image_repository.iterate(doc["project"], 1000, fields=["tag", "is_train", "detections.label"], **selection):
                total += 1
                labels.update(found["label"] for found in image.get("detections") or ())
                yield image["_id"], image["tag"], image.get("is_train", True) is not False

        plan = SplitPlan(doc.get("val_fraction", 0.0), doc.get("seed", 0), plan_rows())
        context.report(0, total)

        def fill(archive: zipfile.ZipFile) -> dict:
            nonlocal done
            writer = WRITERS[doc["format"]](archive, sorted(labels))
            for image in self.image_repository.iterate(doc["project"], 200, **selection):
                try:
                    chunks = self.store.read_range(image["key"])
                except errors.NotFound:
                    log.warning("export %s: image %s has no bytes (deleted meanwhile); left out", doc["_id"], image["_id"])
                    continue
                split = plan.split_of(image["_id"], image["tag"], image.get("is_train", True) is not False)
                writer.add(ExportItem(image, split), chunks)
                done += 1
                if done % REPORT_EVERY == 0:
                    context.report(done, max(total, done))
            writer.finish()
            return writer.splits

        splits, info = stream_zip(self.store, doc["key"], fill)
        finished = mongo.utc_now()
        self.repository.update(doc["_id"], {"size": info.size, "count": done, "splits": splits,
                                            "expires_at": finished + timedelta(seconds=self.ttl_s)})
        context.report(done, done)
        return {"count": done, "size": info.size, "splits": splits}

    def cleanup(self, job: jobs.Job) -> None:
        # From the payload, not the record: a project's delete may have removed that already.
        self.store.delete(export_key(job.payload["project_id"], job.payload["export_id"]))


def stream_zip(store: ObjectStore, key: str, fill: Callable[[zipfile.ZipFile], object]):
    """Writes a zip that `fill` builds straight into `store` under `key`, through a pipe: `fill`
    runs in a thread writing the zip, the store's upload reads the other end. Returns what `fill`
    returned and the stored object's info; if either side fails, nothing stays under `key`."""
    read_fd, write_fd = os.pipe()
    outcome: dict = {}

    def produce():
        try:
            with open(write_fd, "wb", buffering=CHUNK) as sink:
                with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
                    outcome["value"] = fill(archive)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    producer = threading.Thread(target=produce, name=f"zip-{key}", daemon=True)
    producer.start()
    info = None
    try:
        with open(read_fd, "rb", buffering=CHUNK) as source:
            info = store.put_stream(key, source, "application/zip")
    except BaseException:
        producer.join()
        store.delete(key)
        raise
    producer.join()
    if "error" in outcome:
        # The upload saw the pipe close early and stored a partial zip: it goes.
        store.delete(key)
        raise outcome["error"]
    return outcome["value"], info
