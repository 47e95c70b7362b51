"""Video rules: uploads, reads, deletes and the processing job's lifecycle; no HTTP or gRPC here.

An upload is checked completely before anything is stored (the project is the caller's, the
model is readable and of the project's type and ready, the sampling options make sense, the file
is a video a quick probe can decode). Then the file goes to object storage, the record is
written marked `job_pending`, its job is queued and the mark cleared; the worker process does the
rest. An upload that stopped between the record and its job (a crash) leaves the mark, and the
periodic `sweep` queues the job (queuing is idempotent on the job id, so a job that exists is
left as it is). The processing state a reader sees (status, progress, error) is the job's own,
so it can never disagree with the job; while the job waits for a service it needs (the model
service down, say), `waiting` says which and since when.

A delete hides the video at once, stops its job (waiting briefly for a worker to notice), then
removes its frames (through the image service), its file, its job and its record. If any step
cannot finish now, the video stays hidden and `retry_pending_deletions` finishes it later.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from mlstudio.common import detections as detection_forms
from mlstudio.common import errors, jobs, mongo
from mlstudio.common.media_files import MediaFile
from mlstudio.common.vocabulary import TRAINED

from .frames import FrameSampler
from .image_view import image_json
from .probe import VideoInfo, probe
from .upload_form import UploadOptions

log = logging.getLogger(__name__)

SPLIT_JOB = "split_video"
_EXTENSIONS = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/x-msvideo": ".avi", "video/x-flv": ".flv",
    "video/ogg": ".ogv", "video/mpeg": ".mpg", "video/x-ms-asf": ".wmv", "video/quicktime": ".mov",
    "video/mp2t": ".ts",
}
_STATUS = {jobs.QUEUED: "queued", jobs.RUNNING: "processing", jobs.DONE: "done", jobs.FAILED: "failed", jobs.CANCELLED: "failed"}
_VIDEO_TYPE = re.compile(r"^video/[a-z0-9][a-z0-9.+-]{0,63}$")


class Projects(Protocol):
    def get_project(self, project_id: int, user_id: int): ...


class Models(Protocol):
    def get_model(self, model_id: int, user_id: int): ...


class Images(Protocol):
    def list_images(self, project_id: int, user_id: int, *, tag: str = "", video_id: int = 0) -> list: ...

    def delete_images_by_video(self, video_id: int, project_id: int) -> int: ...


@dataclass(frozen=True)
class UploadedFile:
    """The video as spooled to local disk by the HTTP layer."""

    path: Path
    filename: str
    content_type: str


def job_id(video_id: int) -> str:
    return f"video-{video_id}"


def media_path(video_id: int) -> str:
    return f"/videos/{video_id}/file"


def video_key(project_id: int, video_id: int, content_type: str) -> str:
    """Immutable object key of a video's file."""
    return f"videos/{project_id}/{video_id}{_EXTENSIONS.get(content_type, '.bin')}"


def split_payload(doc: dict) -> dict:
    """What the worker needs to split a video, fixed when the job is queued."""
    return {"video_id": doc["_id"], "project_id": doc["project"], "user_id": doc["user"]}


def _waiting(job: jobs.Job | None) -> dict | None:
    """Why an unfinished job is waiting (a service it needs is down), since when, and when it
    tries next; None when it is not waiting."""
    if job is None or job.finished or not job.waiting.get("since"):
        return None
    retry_at = job.waiting.get("retry_at")
    return {"reason": job.waiting.get("reason") or "a service it needs is unavailable", "since": mongo.iso(job.waiting["since"]),
            "retry_at": mongo.iso(retry_at) if retry_at else None}


def expected_images(doc: dict) -> int:
    """How many frames the video should give: the job's progress total until the worker knows."""
    frames, fps = int(doc.get("frame_count") or 0), float(doc.get("fps") or 0.0)
    duration_ms = int(frames * 1000 / fps) if frames > 0 and fps > 0 else 0
    return FrameSampler(doc.get("interval"), doc.get("interval_ms")).estimate(frames, duration_ms)


class VideoCore:
    def __init__(self, repository, job_queue: jobs.JobQueue, store, projects: Projects, models: Models, images: Images, signer, *,
                 wait_timeout_s: float = 600.0, cancel_wait_s: float = 10.0, requeue_after_s: float = 120.0,
                 max_frame_pixels: int = 50_000_000, clock: Callable[[], float] = time.time, poll_s: float = 0.25):
        self.repository = repository
        self.jobs = job_queue
        self.store = store
        self.projects = projects
        self.models = models
        self.images = images
        self.signer = signer
        self.wait_timeout_s = wait_timeout_s
        self.cancel_wait_s = cancel_wait_s
        # Longer than an upload takes from writing its record to queuing its job, so the sweep
        # never queues the job of an upload whose queuing is failing and being rolled back.
        self.requeue_after_s = requeue_after_s
        self.max_frame_pixels = max_frame_pixels
        self.clock = clock
        self.poll_s = poll_s

    # ---- presenting -------------------------------------------------------------------------

    def present(self, doc: dict, job: jobs.Job | None) -> dict:
        """The API's Video: the original fields, then the processing state."""
        # No job yet: the upload is between writing the record and queuing its job, or stopped
        # there; then the sweep queues it (`queue_missing_jobs`).
        status = _STATUS.get(job.status, "failed") if job else "queued"
        error = None
        if job is not None and job.status == jobs.CANCELLED:
            error = "processing was cancelled"
        elif job is not None and job.status == jobs.FAILED:
            error = job.error or "processing failed"
        progress = job.progress if job else {"done": 0, "total": 0}
        return {
            "id": doc["_id"],
            "title": doc["title"],
            "description": doc.get("description", ""),
            "url": self.signer.url(media_path(doc["_id"]), now=self.clock()),
            "type": doc["type"],
            "user": doc["user"],
            "project": doc["project"],
            "create_time": mongo.iso(doc["create_time"]),
            "submittedAt": mongo.iso(doc["create_time"]),  # the upload time, under the original UI's name
            "status": status,
            "progress": {"done": int(progress.get("done", 0)), "total": int(progress.get("total", 0))},
            "frame_count": doc.get("frame_count", 0),
            "fps": doc.get("fps", 0.0),
            "interval": doc.get("interval"),
            "interval_ms": doc.get("interval_ms"),
            "dedupe": bool(doc.get("dedupe")),
            "duplicates_skipped": int(progress.get("skipped", 0)) if doc.get("dedupe") else None,
            "model": doc["model"],
            "error": error,
            "waiting": _waiting(job),
            "content_type": doc.get("content_type"),
            "size": doc.get("size"),
            "width": doc.get("width"),
            "height": doc.get("height"),
        }

    def _owned(self, video_id: int, user_id: int) -> dict:
        doc = self.repository.get(video_id)
        if doc is None or doc["user"] != user_id:
            raise errors.NotFound(f"video {video_id} not found")
        return doc

    def owner(self, video_id: int) -> int:
        """Who owns the video (legacy mode's id-only requests act for them); NotFound if none."""
        doc = self.repository.get(video_id)
        if doc is None:
            raise errors.NotFound(f"video {video_id} not found")
        return doc["user"]

    # ---- reading ----------------------------------------------------------------------------

    def check_project(self, project_id: int, user_id: int):
        """The caller's project (NotFound otherwise), checked before an upload's body is read."""
        return self.projects.get_project(project_id, user_id)

    def list(self, user_id: int, project_id: int) -> list[dict]:
        self.check_project(project_id, user_id)
        docs = self.repository.list_for_project(project_id, user_id)
        found = self.jobs.get_many(job_id(doc["_id"]) for doc in docs)
        return [self.present(doc, found.get(job_id(doc["_id"]))) for doc in docs]

    def get(self, video_id: int, user_id: int) -> dict:
        """The video alone (for GetVideo)."""
        doc = self._owned(video_id, user_id)
        return self.present(doc, self.jobs.get(job_id(video_id)))

    def get_with_images(self, video_id: int, user_id: int) -> dict:
        """`{video, images}`: the video's current state and the frames stored so far."""
        doc = self._owned(video_id, user_id)
        video = self.present(doc, self.jobs.get(job_id(video_id)))
        frames = self.images.list_images(doc["project"], user_id, video_id=video_id)
        images = sorted((image_json(image, doc["type"]) for image in frames), key=lambda image: (image["frame_index"] or 0, image["id"]))
        return {"video": video, "images": images}

    def media_file(self, video_id: int, expires: str | None, signature: str | None) -> MediaFile:
        """The file behind a signed media URL (the signature is the check, not the caller)."""
        self.signer.verify(media_path(video_id), expires, signature, now=self.clock())
        doc = self.repository.get(video_id)
        if doc is None:
            raise errors.NotFound(f"video {video_id} not found")
        try:
            info = self.store.stat(doc["key"])
        except errors.NotFound:
            raise errors.NotFound(f"the file of video {video_id} is missing") from None
        # Cached no longer than the URL stays valid: a browser must not replay an expired URL.
        max_age_s = max(0, int(expires) - int(self.clock()))
        return MediaFile(doc["key"], doc.get("content_type") or "video/mp4", info.size, info.etag, max_age_s)

    def read_media(self, media: MediaFile, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.store.read_range(media.key, start, length)

    # ---- uploading --------------------------------------------------------------------------

    def upload(self, user_id: int, project_id: int, options: UploadOptions, upload: UploadedFile) -> dict:
        """Checks, stores and queues a video; answers `{video, images: []}` at once (`wait_for`
        gives the answer an upload with `wait` expects)."""
        project = self.check_project(project_id, user_id)
        self._check_model(options.model_id, user_id, project)
        info = probe(upload.path, max_pixels=self.max_frame_pixels)
        doc = self._store(user_id, project, options, upload, info)
        job = self._enqueue(doc)
        log.info("video queued", extra={"video": doc["_id"], "project": project_id, "bytes": doc["size"]})
        return {"video": self.present(doc, job), "images": []}

    def _check_model(self, model_id: int, user_id: int, project) -> None:
        model = self.models.get_model(model_id, user_id)
        if model.type != project.type:
            raise errors.InvalidArgument(
                f"model {model_id} is a {model.type} model but project {project.id} is a {project.type} project", code="model_type_mismatch")
        if model.status != TRAINED:
            raise errors.InvalidArgument(f"model {model_id} cannot predict yet (status {model.status})", code="model_not_ready")

    def _store(self, user_id: int, project, options: UploadOptions, upload: UploadedFile, info: VideoInfo) -> dict:
        video_id = self.repository.new_id()
        key = video_key(project.id, video_id, info.content_type)
        # The client's word for the type when it names a video type, else the probe's.
        content_type = upload.content_type if _VIDEO_TYPE.match(upload.content_type) else info.content_type
        # The store takes the spooled file (the local store by rename: the video is written once).
        stored = self.store.put_file(key, upload.path, content_type)
        doc = {
            "_id": video_id,
            "title": options.title,
            "description": options.description,
            "type": project.type,
            "user": user_id,
            "project": project.id,
            "model": options.model_id,
            "interval": options.interval,
            "interval_ms": options.interval_ms,
            "dedupe": options.dedupe,
            "threshold": detection_forms.chosen_threshold(options.threshold, project) or None,
            "key": key,
            "content_type": content_type,
            "size": stored.size,
            "frame_count": info.frame_count,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "create_time": mongo.utc_now(),
            "job_pending": True,  # cleared once its job is queued; the sweep queues it otherwise
        }
        try:
            return self.repository.insert(doc)
        except BaseException:
            self._forget_file(key)
            raise

    def _enqueue(self, doc: dict) -> jobs.Job:
        try:
            job = self._queue_job(doc)
        except BaseException:
            self._forget_file(doc["key"])
            self.repository.remove(doc["_id"])
            raise
        try:
            self.repository.job_queued(doc["_id"])
        except errors.DomainError as exc:  # the job is queued: the sweep clears the mark later
            log.warning("video %s: its job is queued but the record still says it is not: %s", doc["_id"], exc.message)
        return job

    def _queue_job(self, doc: dict) -> jobs.Job:
        return self.jobs.enqueue(job_id(doc["_id"]), SPLIT_JOB, split_payload(doc), total=expected_images(doc))

    def _forget_file(self, key: str) -> None:
        try:
            self.store.delete(key)
        except Exception:  # noqa: BLE001 - the original failure is the one to report
            log.exception("could not remove the file of a failed upload: %s", key)


    def wait_for(self, video_id: int, user_id: int, timeout_s: float | None = None) -> dict:
        """`{video, images}` once processing has ended, or as things stand at the timeout."""
        self.jobs.wait(job_id(video_id), self.wait_timeout_s if timeout_s is None else timeout_s, self.poll_s)
        return self.get_with_images(video_id, user_id)

    # ---- maintenance ------------------------------------------------------------------------

    def sweep(self) -> None:
        """The API process's periodic round: finishes what an interruption left unfinished. Each
        task runs even when the other cannot finish now (the next round tries again)."""
        for task in (self.queue_missing_jobs, self.retry_pending_deletions):
            try:
                task()
            except errors.DomainError as exc:
                log.warning("sweep: %s did not finish, will retry: %s", task.__name__, exc.message)

    def queue_missing_jobs(self) -> int:
        """Queues the jobs of uploads that stopped after writing their record (a crash before the
        job was queued); returns how many records were seen to."""
        cutoff = mongo.utc_now() - timedelta(seconds=self.requeue_after_s)
        count = 0
        for doc in self.repository.awaiting_job(created_until=cutoff):
            self._queue_job(doc)
            self.repository.job_queued(doc["_id"])
            log.info("video queued by the sweep", extra={"video": doc["_id"]})
            count += 1
        return count

    # ---- deleting ---------------------------------------------------------------------------

    def delete(self, video_id: int, user_id: int) -> None:
        """Hides the video now; its job, frames, file and record go as soon as its worker stops."""
        doc = self._owned(video_id, user_id)
        self.repository.mark_deleting(video_id)
        self.jobs.cancel(job_id(video_id))
        self._wait_until_stopped([video_id])
        self._finish_quietly(doc)

    def delete_project_data(self, project_id: int) -> int:
        """Every video of a project, for the project service's cascade. Idempotent; Unavailable
        while a worker is still stopping, so the caller retries."""
        docs = self.repository.mark_project_deleting(project_id)
        for doc in docs:
            self.jobs.cancel(job_id(doc["_id"]))
        self._wait_until_stopped([doc["_id"] for doc in docs])
        unfinished = [doc["_id"] for doc in docs if not self._finish(doc)]
        if unfinished:
            raise errors.Unavailable(f"videos {unfinished} of project {project_id} are still being stopped; try again shortly")
        return len(docs)

    def retry_pending_deletions(self) -> int:
        """Finishes deletions that could not finish at once; returns how many did."""
        return sum(1 for doc in self.repository.pending_deletions() if self._finish_quietly(doc))

    def _wait_until_stopped(self, video_ids: list[int]) -> None:
        deadline = time.monotonic() + self.cancel_wait_s
        running = list(video_ids)
        while running:
            running = [video_id for video_id in running if self.jobs.is_active(job_id(video_id))]
            if not running or time.monotonic() >= deadline:
                return
            time.sleep(self.poll_s)

    def _finish_quietly(self, doc: dict) -> bool:
        try:
            return self._finish(doc)
        except errors.DomainError as exc:
            log.warning("video %s: deletion unfinished, will retry: %s", doc["_id"], exc.message)
            return False

    def _finish(self, doc: dict) -> bool:
        """Removes a hidden video's frames, file, job and record, unless a worker still holds it."""
        video_id = doc["_id"]
        self.jobs.cancel(job_id(video_id))
        if self.jobs.is_active(job_id(video_id)):
            log.info("video %s: deletion waits for its worker to stop", video_id)
            return False
        self.images.delete_images_by_video(video_id, doc["project"])
        self.store.delete(doc["key"])
        self.jobs.delete(job_id(video_id))
        self.repository.remove(video_id)
        log.info("video deleted", extra={"video": video_id})
        return True
