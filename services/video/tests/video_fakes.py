"""In-memory stand-ins for the video service's collaborators (its MongoDB repository and job
queue, the project, model and image services) and generated test videos, so the core, the frame
pipeline and both adapters are tested without any process."""
from __future__ import annotations

import copy
import itertools
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from image_service.detections import filed_under
from mlstudio.common.tags import tag_from_label

from mlstudio.common import errors, jobs
from mlstudio.common.detections import from_boxes
from mlstudio.image.v1 import image_pb2
from mlstudio.model.v1 import model_pb2

LIGHT, DARK = 255, 0


def write_light_dark_video(path: Path, frames: int = 200, light: int = 100, size=(64, 48), fps: float = 25.0, fourcc: str = "mp4v") -> Path:
    """`frames` plain frames: the first `light` white, the rest black."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), "OpenCV cannot write test videos here"
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), LIGHT if index < light else DARK, np.uint8))
    writer.release()
    return path


def brightness_label(jpeg: bytes) -> tuple[str, float]:
    """What the brightness model says of a frame: `light` or `dark` with a confidence."""
    pixels = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    mean = float(pixels.mean()) / 255.0
    return ("light", mean) if mean >= 0.5 else ("dark", 1.0 - mean)


class FakeLabeller:
    """The model service: classifies by brightness; detects one "bottle" box in light frames."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.fail_with: Exception | None = None
        self.short_answer = False

    def classify(self, model_id, user_id, images):
        self.calls.append(("classify", len(images)))
        if self.fail_with:
            raise self.fail_with
        results = [model_pb2.Classification(label=label.upper() if i == 0 else label, score=score)
                   for i, (label, score) in enumerate(map(brightness_label, images))]
        return results[:-1] if self.short_answer else results

    def detect(self, model_id, user_id, images, threshold=0.0):
        self.calls.append(("detect", len(images)))
        self.threshold = threshold
        if self.fail_with:
            raise self.fail_with
        answers = []
        for jpeg in images:
            label, score = brightness_label(jpeg)
            boxes = [model_pb2.Box(label="Bottle", score=0.9, x1=1, y1=2, x2=30.4, y2=40.6),
                     model_pb2.Box(label="cap", score=0.6, x1=3, y1=4, x2=5, y2=6)] if label == "light" else []
            answers.append(model_pb2.ImageDetections(boxes=boxes))
        return answers


def filed_as(new: image_pb2.NewImage) -> tuple[str, float | None]:
    """The tag and score the image service's CreateImages files a frame under, by its own rule
    (the label made a tag; without one, `detected`, with the most confident detection's score)."""
    score = new.score if new.HasField("score") else None
    if new.tag.strip():
        return tag_from_label(new.tag), score
    tag, best_score = filed_under(from_boxes(new.detections))
    return tag, best_score if score is None else score


class FakeImages:
    """The image service's frame calls, idempotent on (video id, frame index) like the real one;
    `sent` keeps every frame as the caller sent it."""

    def __init__(self):
        self.images: dict[tuple[int, int], image_pb2.Image] = {}
        self.sent: list[image_pb2.NewImage] = []
        self.ids = itertools.count(1)
        self.create_calls = 0
        self.fail_with: Exception | None = None
        self.lock = threading.Lock()

    def create_images(self, project_id, user_id, images):
        with self.lock:
            self.create_calls += 1
            if self.fail_with:
                raise self.fail_with
            self.sent.extend(images)
            stored = []
            for new in images:
                key = (new.video_id, new.frame_index)
                if key not in self.images:
                    tag, score = filed_as(new)
                    image = image_pb2.Image(
                        id=next(self.ids), project_id=project_id, user_id=user_id, tag=tag, title=new.title,
                        video_id=new.video_id, frame_index=new.frame_index, timestamp_ms=new.timestamp_ms,
                        detections=list(new.detections), content_type=new.content_type, is_train=True,
                        url=f"http://gateway.test/images/{len(self.images) + 1}/file")
                    if score is not None:
                        image.score = score
                    self.images[key] = image
                stored.append(self.images[key])
            return stored

    def list_images(self, project_id, user_id, *, tag="", video_id=0):
        return [image for image in self.images.values() if image.project_id == project_id and (not video_id or image.video_id == video_id)]

    def delete_images_by_video(self, video_id, project_id):
        with self.lock:
            if self.fail_with:
                raise self.fail_with
            doomed = [key for key, image in self.images.items() if image.video_id == video_id]
            for key in doomed:
                del self.images[key]
            return len(doomed)

    def of_video(self, video_id) -> list[image_pb2.Image]:
        return sorted((image for image in self.images.values() if image.video_id == video_id), key=lambda image: image.frame_index)


class FakeProjects:
    def __init__(self, projects: dict[int, tuple[int, str]]):
        self.projects = projects

    def get_project(self, project_id, user_id):
        """`projects[id] = (owner, type)` or `(owner, type, threshold)`."""
        owner, type_, *threshold = self.projects.get(project_id, (None, None))
        if owner != user_id:
            raise errors.NotFound(f"project {project_id} not found")
        return SimpleNamespace(id=project_id, type=type_, user_id=owner, threshold=threshold[0] if threshold else 0.0)


class FakeModels:
    def __init__(self, models: dict[int, dict]):
        self.models = models

    def get_model(self, model_id, user_id):
        model = self.models.get(model_id)
        if model is None or (model["user"] != user_id and not model.get("public")):
            raise errors.NotFound(f"model {model_id} not found")
        return SimpleNamespace(id=model_id, type=model["type"], status=model.get("status", "Trained"))


class FakeRepository:
    """The `VideoRepository` interface over a dict."""

    def __init__(self):
        self.docs: dict[int, dict] = {}
        self.last_id = 0

    def new_id(self):
        self.last_id += 1
        return self.last_id

    def insert(self, doc):
        self.docs[doc["_id"]] = copy.deepcopy(doc)
        return doc

    def get(self, video_id):
        doc = self.docs.get(video_id)
        return copy.deepcopy(doc) if doc and not doc.get("deleting") else None

    def get_any(self, video_id):
        return copy.deepcopy(self.docs.get(video_id))

    def list_for_project(self, project_id, user_id):
        return [copy.deepcopy(d) for d in self.docs.values() if d["project"] == project_id and d["user"] == user_id and not d.get("deleting")]

    def update(self, video_id, changes):
        self.docs[video_id].update(changes)

    def mark_deleting(self, video_id):
        self.docs[video_id]["deleting"] = True

    def mark_project_deleting(self, project_id):
        docs = [d for d in self.docs.values() if d["project"] == project_id]
        for doc in docs:
            doc["deleting"] = True
        return copy.deepcopy(docs)

    def pending_deletions(self):
        return [copy.deepcopy(d) for d in self.docs.values() if d.get("deleting")]

    def awaiting_job(self, created_until):
        return [copy.deepcopy(d) for d in self.docs.values()
                if d.get("job_pending") and d["create_time"] <= created_until and not d.get("deleting")]

    def job_queued(self, video_id):
        if video_id in self.docs:
            self.docs[video_id].pop("job_pending", None)

    def remove(self, video_id):
        self.docs.pop(video_id, None)


class FakeJobQueue:
    """The parts of `jobs.JobQueue` the API process uses, with its state rules (the claiming side
    is tested against a real mongod in services/common/tests/test_jobs.py)."""

    def __init__(self):
        self.docs: dict[str, dict] = {}
        self.live_workers: set[str] = set()  # job ids whose worker holds a live lease
        self.enqueued: list[str] = []  # every enqueue call's job id
        self.fail_with: Exception | None = None  # raised by the next enqueue

    def _job(self, job_id):
        doc = self.docs.get(job_id)
        return jobs.Job.from_doc(copy.deepcopy(doc)) if doc else None

    def enqueue(self, job_id, kind, payload, *, total=0):
        self._fail_once()
        self.docs.setdefault(job_id, {"_id": job_id, "kind": kind, "payload": dict(payload), "status": jobs.QUEUED, "attempts": 0,
                                      "max_attempts": 3, "progress": {"done": 0, "total": total}, "checkpoint": {}, "error": ""})
        self.enqueued.append(job_id)
        return self._job(job_id)

    def _fail_once(self):
        if self.fail_with:
            error, self.fail_with = self.fail_with, None
            raise error

    def get(self, job_id):
        return self._job(job_id)

    def get_many(self, job_ids):
        return {job_id: self._job(job_id) for job_id in job_ids if job_id in self.docs}

    def set(self, job_id, **changes):
        self.docs[job_id].update(changes)

    def cancel(self, job_id):
        doc = self.docs.get(job_id)
        if doc is None:
            return None
        if doc["status"] in jobs.FINISHED:
            return self._job(job_id)
        if doc["status"] == jobs.QUEUED and doc["attempts"] == 0:  # never started: nothing to clean up
            doc["status"] = jobs.CANCELLED
        doc["cancel_requested"] = True  # else a worker stops, cleans up, then cancels it
        return self._job(job_id)

    def is_active(self, job_id):
        doc = self.docs.get(job_id)
        return bool(doc) and doc["status"] == jobs.RUNNING and job_id in self.live_workers

    def delete(self, job_id):
        self.docs.pop(job_id, None)

    def wait(self, job_id, timeout_s, poll_s=0.25):
        return self._job(job_id)


class RecordingContext:
    """A `jobs.JobContext` stand-in: records reports, can cancel after N of them."""

    def __init__(self, job: jobs.Job | None = None, cancel_after: int | None = None):
        self.job = job
        self.reports: list[tuple[int, int, dict]] = []
        self.cancel_after = cancel_after

    def check(self):
        if self.cancel_after is not None and len(self.reports) >= self.cancel_after:
            raise jobs.JobCancelled("cancelled")

    def report(self, done, total, checkpoint=None, details=None):
        self.check()
        self.reports.append((done, total, dict(checkpoint or {})))
