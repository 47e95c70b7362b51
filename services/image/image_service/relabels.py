"""Re-labelling a project's images with a model, as a background job with progress and cancel.

`POST /projects/<id>/relabels` checks the request (the model is readable by the caller and of the
project's type) and queues a job in the image service's `dataset_jobs` queue, which its worker
threads run. The job lists the images in scope once (ids only), then reads their bytes in batches
of at most `predict_batch_bytes`, asks the model service for one batch at a time (one `Classify`
or `Detect` call, as the video pipeline does), and writes each image's new tag, score, boxes and
checked state (by the project's review threshold, as for any model label).

A label a person checked is never overwritten: the scope leaves out images a person labelled or
reviewed, and each write is conditional on the image still being in scope, so a confirmation
made while the job runs wins. Scopes: `review` (default), the images waiting for review; `all`,
every image whose label is a model's (those the threshold checked too). `tag` and `video_id`
narrow either. Progress is saved after every batch; a cancelled job stops at its next batch
(what it wrote stays: each image's change is whole).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from mlstudio.common import detections as detection_forms
from mlstudio.common import errors, jobs, mongo, review
from mlstudio.common.tags import normalize_tag
from mlstudio.common.vocabulary import DETECTION

from . import detections as detections_mod
from .project_jobs import ProjectJobCore

log = logging.getLogger(__name__)

KIND = "relabel"
SCOPES = ("review", "all")


def job_id(relabel_id: int) -> str:
    return f"relabel-{relabel_id}"


def parse_request(body) -> dict:
    """The re-labelling's options from the request body; InvalidArgument names what is wrong."""
    if not isinstance(body, dict):
        raise errors.InvalidArgument("the body must be a JSON object such as {\"model_id\": 7}", code="invalid_body")
    unknown = set(body) - {"model_id", "scope", "tag", "video_id", "threshold"}
    if unknown:
        raise errors.InvalidArgument(f"unknown fields {sorted(unknown)}; expected model_id, scope, tag, video_id, threshold",
                                     code="invalid_body")
    model_id, video_id = body.get("model_id"), body.get("video_id")
    if isinstance(model_id, bool) or not isinstance(model_id, int) or model_id < 1:
        raise errors.InvalidArgument("model_id must be a model's id (a positive integer)", code="invalid_body")
    if video_id is not None and (isinstance(video_id, bool) or not isinstance(video_id, int) or video_id < 1):
        raise errors.InvalidArgument("video_id must be a video's id (a positive integer)", code="invalid_body")
    scope = body.get("scope", "review")
    if scope not in SCOPES:
        raise errors.InvalidArgument(f"scope must be one of {', '.join(SCOPES)}", code="invalid_body")
    threshold = body.get("threshold")
    threshold = detection_forms.threshold(threshold) if threshold is not None else 0.0
    tag = body.get("tag")
    return {"model_id": model_id, "scope": scope, "tag": normalize_tag(tag) if tag is not None else None,
            "video_id": video_id, "threshold": threshold}


def in_scope(scope: str) -> dict:
    """What an image must match to be re-labelled (at selection and again at each write): its
    label is a model's (`model_label`, which a person's retag, boxes or confirmation clear), and
    for `review` it waits for review."""
    selector: dict = {"model_label": True}
    if scope == "review":
        selector["is_train"] = False
    return selector


class RelabelCore(ProjectJobCore):
    """The re-labelling routes' rules: ownership, the request, what a person sees of a run."""

    noun = "re-labelling"

    def __init__(self, images, repository, queue: jobs.JobQueue, *, ttl_s: float, clock: Callable[[], float] = time.time):
        self.images = images  # the ImageCore: projects, models
        self.repository = repository
        self.queue = queue
        self.ttl_s = ttl_s
        self.clock = clock

    def create(self, user_id: int, project_id: int, body) -> dict:
        project = self.images.project(project_id, user_id)
        options = parse_request(body)
        self.images.check_model(options["model_id"], user_id, project)
        relabel_id = self.repository.next_id()
        now = mongo.utc_now()
        doc = {"_id": relabel_id, "project": project_id, "user": user_id, "project_type": project.type, **options,
               "job": job_id(relabel_id), "key": "", "create_time": now, "expires_at": now + timedelta(seconds=self.ttl_s)}
        self.repository.insert(doc)
        job = self.queue.enqueue(doc["job"], KIND, {"relabel_id": relabel_id, "project_id": project_id})
        return self.present(doc, job)

    def cancel(self, user_id: int, project_id: int, relabel_id: int) -> dict:
        """Asks the run to stop at its next batch; 406 when it has finished."""
        doc = self._owned(user_id, project_id, relabel_id)
        job = self.queue.get(doc["job"])
        if job is None or job.finished:
            raise errors.NotAcceptable(f"re-labelling {relabel_id} has finished", code="not_running")
        return self.present(doc, self.queue.cancel(doc["job"]) or job)

    @staticmethod
    def present(doc: dict, job: jobs.Job | None) -> dict:
        result = (job.result if job else None) or {}
        return {
            "id": doc["_id"], "project": doc["project"], "model_id": doc["model_id"], "scope": doc["scope"],
            "tag": doc.get("tag"), "video_id": doc.get("video_id"), "status": job.status if job else "failed",
            "progress": {"done": job.progress.get("done", 0), "total": job.progress.get("total", 0)} if job else {"done": 0, "total": 0},
            # While it runs, the count saved with its progress; once done, its result's.
            "changed": result.get("changed", job.progress.get("changed", 0) if job else 0),
            "error": (job.error if job else "the re-labelling's job is gone") or None,
            "create_time": mongo.iso(doc["create_time"]), "expires_at": mongo.iso(doc["expires_at"]),
        }

    def sweep_expired(self) -> int:
        """Removes runs past their expiry (the job and the record; a running one is cancelled first)."""
        removed = 0
        for doc in self.repository.expired(mongo.utc_now()):
            job = self.queue.get(doc["job"])
            if job is not None and not job.finished:
                self.queue.cancel(doc["job"])
                continue
            self.queue.delete(doc["job"])
            self.repository.delete(doc["_id"])
            removed += 1
        return removed

    def cancel_project(self, project_id: int) -> None:
        for doc in self.repository.list(project_id):
            self.queue.cancel(doc["job"])


class RelabelJob:
    """The job handler: runs the model over the images in scope and files its labels."""

    def __init__(self, images, image_repository, repository):
        self.images = images  # the ImageCore: the model service, the store, batches, filing
        self.image_repository = image_repository
        self.repository = repository

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        doc = self.repository.get(job.payload["relabel_id"])
        if doc is None:
            raise jobs.JobFailed("the re-labelling was removed before it ran")
        try:
            project = self.images.project(doc["project"], doc["user"])
        except errors.NotFound:
            raise jobs.JobFailed("the project is gone") from None
        review_threshold = review.project_threshold(project)
        scope = in_scope(doc["scope"])
        ids = [image["_id"] for image in self.image_repository.iterate(
            doc["project"], 1000, tag=doc.get("tag"), video_id=doc.get("video_id"), where=scope, fields=["_id"])]
        changed, done = 0, 0
        context.report(0, len(ids), details={"changed": 0})
        for batch in self._batches(ids):
            contents = self._contents(batch)
            if contents:
                labels = self._labels(doc, project.type, [content for _, content in contents])
                for (image, _), facts in zip(contents, labels):
                    facts.update(is_train=review.model_label_checked(facts["score"], review_threshold), model_label=True)
                    if self.image_repository.relabel(image["_id"], facts, scope):
                        changed += 1
            done += len(batch)
            context.report(done, len(ids), details={"changed": changed})
        return {"changed": changed, "images": len(ids)}

    def _batches(self, ids: list[int], size: int = 32):
        for start in range(0, len(ids), size):
            yield ids[start:start + size]

    def _contents(self, ids: list[int]) -> list[tuple[dict, bytes]]:
        """The batch's images still there, with their bytes."""
        found = []
        for image in self.image_repository.get_many(ids):
            try:
                found.append((image, self.images.store.get_bytes(image["key"])))
            except errors.NotFound:
                log.warning("re-labelling: image %s has no bytes (deleted meanwhile); left as it is", image["_id"])
        return found

    def _labels(self, doc: dict, project_type: str, contents: list[bytes]) -> list[dict]:
        models = self.images.models
        try:
            if project_type == DETECTION:
                results = models.detect(doc["model_id"], doc["user"], contents, doc.get("threshold", 0.0))
            else:
                results = models.classify(doc["model_id"], doc["user"], contents)
        except errors.NotFound as exc:
            raise jobs.JobFailed(f"model {doc['model_id']} cannot label the images any more: {exc.message}") from None
        except errors.Unavailable:
            raise
        except errors.DomainError as exc:
            raise jobs.JobFailed(f"model {doc['model_id']} could not label the images: {exc.message}") from None
        if len(results) != len(contents):
            raise jobs.JobFailed(f"the model answered {len(results)} results for {len(contents)} images")
        return [self.images.model_facts(project_type, result) for result in results]

    def cleanup(self, job: jobs.Job) -> None:
        """Nothing to remove: each image's change was whole."""
