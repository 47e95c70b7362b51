"""In-memory stand-ins for the image service's collaborators (MongoDB repository, object store,
project/model/video services), generated test images, and the small world of users, projects
and models the unit tests share, so the core and both adapters are tested without any process."""
from __future__ import annotations

import copy
import io
import itertools
from dataclasses import dataclass
from types import SimpleNamespace

from image_service.core import ImageCore
from image_service.uploads import UploadLimits
from mlstudio.common import errors
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import ObjectInfo, ObjectStore, check_key
from PIL import Image

_colors = itertools.count(1)


def image_bytes(fmt: str = "PNG", size=(8, 6), color=None) -> bytes:
    """A small image; without `color`, each call's pixels differ from every other call's, since
    the same bytes uploaded twice into a project are stored once."""
    if color is None:
        n = next(_colors)
        color = (n % 256, n // 256 % 256, 30)
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


class FakeRepository:
    """The `ImageRepository` interface over a dict, with the same visibility and uniqueness rules."""

    def __init__(self):
        self.docs: dict[int, dict] = {}
        self.last_id = 0
        self.fail_insert = False
        self.frames_stored_meanwhile: list[dict] = []
        self.uploads_stored_meanwhile: list[dict] = []

    def reserve_ids(self, count):
        ids = list(range(self.last_id + 1, self.last_id + count + 1))
        self.last_id += count
        return ids

    def insert_uploads(self, docs):
        if self.fail_insert:
            # Like an insert that stops half-way: the first document is in.
            self.docs[docs[0]["_id"]] = copy.deepcopy(docs[0])
            raise errors.Unavailable("the database is unavailable, try again shortly")
        # A concurrent upload of the same bytes that got there first, set up by a test.
        for doc in self.uploads_stored_meanwhile:
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        self.uploads_stored_meanwhile = []
        taken = {(d["project"], d["sha256"]) for d in self.docs.values() if d.get("distinct_bytes")}
        duplicates = set()
        for doc in docs:
            key = (doc["project"], doc["sha256"])
            if doc.get("distinct_bytes") and key in taken:
                duplicates.add(doc["_id"])
                continue
            taken.add(key)
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        return duplicates

    def find_by_sha256(self, project_id, digests):
        found = {}
        for doc in self._visible():
            if doc["project"] == project_id and doc["sha256"] in digests:
                found.setdefault(doc["sha256"], doc)
        return found

    def insert_frames(self, docs):
        # A concurrent retry that got there first, set up by a test.
        for doc in self.frames_stored_meanwhile:
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        self.frames_stored_meanwhile = []
        taken = {(d["video"], d["frame_index"]) for d in self.docs.values() if d.get("video")}
        duplicates = set()
        for doc in docs:
            key = (doc["video"], doc["frame_index"])
            if doc.get("video") and key in taken:
                duplicates.add(doc["_id"])
                continue
            taken.add(key)
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        return duplicates

    def delete_ids(self, ids):
        for image_id in ids:
            self.docs.pop(image_id, None)

    def _visible(self):
        return [copy.deepcopy(d) for _, d in sorted(self.docs.items()) if not d.get("deleting")]

    def get(self, image_id, *, include_deleting=False):
        doc = self.docs.get(image_id)
        if doc is None or (doc.get("deleting") and not include_deleting):
            return None
        return copy.deepcopy(doc)

    def find_frames(self, video_id, frame_indexes):
        return [d for d in self._visible() if d.get("video") == video_id and d["frame_index"] in frame_indexes]

    def list(self, *, project_id, tag=None, video_id=None, limit=None, offset=0, after_id=None, review=False, by_score=False):
        docs = [d for d in self._visible() if d["project"] == project_id
                and (tag is None or d["tag"] == tag) and (video_id is None or d.get("video") == video_id)
                and (after_id is None or d["_id"] > after_id)
                and (not review or d.get("is_train") is False)]
        if video_id is not None:
            docs.sort(key=lambda d: (d["frame_index"], d["_id"]))
        if by_score:  # MongoDB's order: null (no score) before numbers
            docs.sort(key=lambda d: (d.get("score") is not None, d.get("score") or 0, d["_id"]))
        docs = docs[offset:]
        return docs[:limit] if limit else docs

    def list_by_video(self, video_id):
        return sorted((d for d in self._visible() if d.get("video") == video_id), key=lambda d: (d["frame_index"], d["_id"]))

    def iterate(self, project_id, batch_size=200, *, tag=None, checked_only=False, video_id=None, where=None, fields=None):
        for doc in self.list(project_id=project_id, tag=tag):
            if ((not checked_only or doc.get("is_train", True) is not False) and (video_id is None or doc.get("video") == video_id)
                    and all(doc.get(name) == value for name, value in (where or {}).items())):
                yield doc

    def relabel(self, image_id, changes, condition):
        doc = self.get(image_id)
        if doc is None or any(doc.get(name) != value for name, value in condition.items()):
            return False
        self.docs[image_id].update(copy.deepcopy(changes))
        return True

    def get_many(self, image_ids):
        return [doc for doc in self._visible() if doc["_id"] in image_ids]

    def set_phash(self, image_id, phash):
        self.docs[image_id]["phash"] = phash

    def tag_summary(self, project_id):
        rows = {}
        for doc in self.list(project_id=project_id):
            row = rows.setdefault(doc["tag"], {"tag": doc["tag"], "count": 0, "first": doc})
            row["count"] += 1
        return [rows[tag] for tag in sorted(rows)]

    def change_labels(self, image_id, changes):
        doc = self.get(image_id)
        if doc is None:
            return None
        self.docs[image_id].update(copy.deepcopy(changes))
        return self.get(image_id)

    def rename_tag(self, project_id, old, new):
        moved = 0
        for doc in self.docs.values():
            if doc["project"] == project_id and doc["tag"] == old and not doc.get("deleting"):
                doc["tag"] = new
                moved += 1
        return moved

    def mark_deleting(self, *, project_id=None, tag=None, video_id=None, image_id=None):
        chosen = []
        for doc in self.docs.values():
            if ((image_id is None or doc["_id"] == image_id) and (project_id is None or doc["project"] == project_id)
                    and (tag is None or doc["tag"] == tag) and (video_id is None or doc.get("video") == video_id)):
                doc["deleting"] = True
                doc.pop("distinct_bytes", None)
                chosen.append({"_id": doc["_id"], "key": doc["key"]})
        return chosen

    def pending_deletes(self, limit=1000):
        return [{"_id": d["_id"], "key": d["key"]} for d in self.docs.values() if d.get("deleting")][:limit]


class MemoryStore(ObjectStore):
    """Objects in a dict; `fail_put_after` / `fail_delete` make writes fail on purpose."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.fail_put_after: int | None = None
        self.fail_delete = False

    def put_stream(self, key, stream, content_type="application/octet-stream"):
        check_key(key)
        if self.fail_put_after is not None:
            if self.fail_put_after == 0:
                raise errors.Unavailable("object storage (fake) is unavailable: disk full")
            self.fail_put_after -= 1
        self.objects[key] = stream.read()
        self.content_types[key] = content_type
        return self.stat(key)

    def stat(self, key):
        if key not in self.objects:
            raise errors.NotFound(f"object {key} not found")
        return ObjectInfo(key, len(self.objects[key]), "etag")

    def read_range(self, key, start=0, length=None):
        data = self.stat(key) and self.objects[key]
        end = None if length is None else start + length
        return iter([data[start:end]])

    def delete(self, key):
        if self.fail_delete:
            raise errors.Unavailable("object storage (fake) is unavailable: storage down")
        self.objects.pop(key, None)

    def list_keys(self, prefix):
        return sorted(key for key in self.objects if key.startswith(prefix))

    def ping(self):
        return True


class FakeProjects:
    """The project service: `projects[id] = (owner, type)` or `(owner, type, threshold)`;
    `review_thresholds[id]` where a test sets one (else the project service's default)."""

    def __init__(self, projects=None):
        self.projects = projects or {}
        self.review_thresholds: dict[int, float] = {}

    def get_project(self, project_id, user_id):
        owner_type = self.projects.get(project_id)
        if owner_type is None or owner_type[0] != user_id:
            raise errors.NotFound(f"project {project_id} not found")
        threshold = owner_type[2] if len(owner_type) > 2 else 0.0
        return SimpleNamespace(id=project_id, user_id=owner_type[0], type=owner_type[1], threshold=threshold,
                               review_threshold=self.review_thresholds.get(project_id))


class FakeModels:
    """The model service: models by id, scripted answers, and a record of the calls."""

    def __init__(self, models=None, labels=None, boxes=None):
        self.models = models or {}
        self.labels = labels or []
        self.boxes = boxes or []
        self.calls: list[tuple[str, int]] = []
        self.during_call = lambda: None  # what happens while the model service works (a client leaving, say)

    def get_model(self, model_id, user_id):
        model = self.models.get(model_id)
        if model is None or (model["user"] != user_id and not model.get("public")):
            raise errors.NotFound(f"model {model_id} not found")
        return SimpleNamespace(id=model_id, type=model["type"])

    def classify(self, model_id, user_id, images, deadline=None):
        self.calls.append(("classify", len(images)))
        self.during_call()
        answers, self.labels = self.labels[: len(images)], self.labels[len(images):]
        return [SimpleNamespace(label=label, score=score) for label, score in answers]

    def detect(self, model_id, user_id, images, threshold=0.0, deadline=None):
        self.calls.append(("detect", len(images)))
        self.during_call()
        self.threshold = threshold
        answers, self.boxes = self.boxes[: len(images)], self.boxes[len(images):]
        return [SimpleNamespace(boxes=[SimpleNamespace(label=b[0], score=b[1], x1=b[2], y1=b[3], x2=b[4], y2=b[5]) for b in found])
                for found in answers]


class FakeVideos:
    """The video service: `videos[id] = (owner, project)`."""

    def __init__(self, videos=None):
        self.videos = videos or {}

    def get_video(self, video_id, user_id):
        owner_project = self.videos.get(video_id)
        if owner_project is None or owner_project[0] != user_id:
            raise errors.NotFound(f"video {video_id} not found")
        return SimpleNamespace(id=video_id, user_id=owner_project[0], project_id=owner_project[1])

    def video_owner(self, video_id):
        if video_id not in self.videos:
            raise errors.NotFound(f"video {video_id} not found")
        return self.videos[video_id][0]


# ---- the world of the unit tests ---------------------------------------------------------------
# User 1 owns project 10 (Classification) and 11 (Detection); user 2 owns project 20. Model 7 is
# user 1's Classification model, 8 a public Detection model, 9 user 2's private model. Video 5
# is user 1's, in project 10; video 6 user 2's, in project 20.

NOW = 1_700_000_000.0


@dataclass
class World:
    core: ImageCore
    repository: FakeRepository
    store: MemoryStore
    models: FakeModels
    signer: MediaSigner
    projects: FakeProjects | None = None


def build_world(*, with_models=True, with_videos=True, predict_batch_bytes=16 * 1024 * 1024, detection_filing="detected") -> World:
    repository, store = FakeRepository(), MemoryStore()
    projects = FakeProjects({10: (1, "Classification"), 11: (1, "Detection"), 20: (2, "Classification")})
    models = FakeModels({7: {"user": 1, "type": "Classification"}, 8: {"user": 3, "type": "Detection", "public": True},
                         9: {"user": 2, "type": "Classification"}})
    videos = FakeVideos({5: (1, 10), 6: (2, 20)})
    signer = MediaSigner("test-key", "http://gateway.test", 3600)
    core = ImageCore(repository, store, projects, signer, UploadLimits(max_bytes=4096, max_files=5, max_pixels=10_000),
                     models=models if with_models else None, videos=videos if with_videos else None,
                     predict_batch_bytes=predict_batch_bytes, detection_filing=detection_filing, clock=lambda: NOW)
    return World(core, repository, store, models, signer, projects)
